/* The cheapest confirming omprog consumer: answers every message at once and keeps nothing.
 * bench/ingest.py --rsyslog-null runs it in ingest's place to measure what rsyslog itself
 * delivers through omprog's confirmation protocol on this machine (its ceiling for any
 * consumer). Writes the count of messages answered to $COUNT at each COMMIT. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void reply(const char *s) {
    size_t n = strlen(s);
    if (write(1, s, n) != (ssize_t)n)
        exit(1);
}

int main(void) {
    const char *count_file = getenv("COUNT");
    char *line = NULL;
    size_t cap = 0;
    long count = 0;
    reply("OK\n");
    while (getline(&line, &cap, stdin) > 0) {
        if (!strncmp(line, "BEGIN TRANSACTION", 17)) {
            reply("OK\n");
        } else if (!strncmp(line, "COMMIT TRANSACTION", 18)) {
            reply("OK\n");
            FILE *f = count_file ? fopen(count_file, "w") : NULL;
            if (f) {
                fprintf(f, "%ld\n", count);
                fclose(f);
            }
        } else {
            reply("DEFER_COMMIT\n");
            count++;
        }
    }
    return 0;
}
