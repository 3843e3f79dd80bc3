/* A C program that is not Python, for tests/non_python.rs: it opens files, forks, uses
 * posix_spawn and vfork, and defines its own `open` (which replaces libc's for the program
 * and, built with -rdynamic, for every library in the process, the preloaded one included).
 * Its output depends only on its input, so runs with and without the library can be compared
 * byte for byte. Exit code 4. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int own_open_calls;

int open(const char *path, int flags, ...) {
  mode_t mode = 0;
  if (flags & (O_CREAT | O_TMPFILE)) {
    va_list ap;
    va_start(ap, flags);
    mode = va_arg(ap, int);
    va_end(ap);
  }
  own_open_calls++;
  return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}

static void wait_for(pid_t pid, const char *what) {
  int status;
  if (waitpid(pid, &status, 0) != pid) {
    printf("%s: waitpid failed\n", what);
    return;
  }
  printf("%s: exit %d\n", what, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  fflush(stdout);
}

/* Descriptors open in this process (not counting the directory being read). */
static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  if (!d) return -1;
  while ((e = readdir(d))) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char buf[256];
  int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
  if (fd >= 0) close(fd);
  printf("open+read: %zd bytes\n", n);
  FILE *f = fopen(argv[1], "r");
  int lines = 0;
  while (f && fgets(buf, sizeof buf, f)) lines++;
  if (f) fclose(f);
  printf("fopen: %d lines\n", lines);
  fd = open("/nonexistent/pyusage", O_RDONLY);
  printf("open of a missing file: %d\n", fd);
  fflush(stdout);

  pid_t pid = fork();
  if (pid == 0) {
    printf("forked child\n");
    fflush(stdout);
    _exit(3);
  }
  wait_for(pid, "fork");

  char *spawn_argv[] = {"echo", "spawned", NULL};
  if (posix_spawn(&pid, "/bin/echo", NULL, NULL, spawn_argv, environ) == 0)
    wait_for(pid, "posix_spawn");
  else
    printf("posix_spawn failed\n");

  pid = vfork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", "echo vforked; exit 5", (char *)NULL);
    _exit(127);
  }
  wait_for(pid, "vfork");

  printf("open descriptors: %d\n", open_fds());
  printf("own open called %d times\n", own_open_calls);
  fprintf(stderr, "a line on stderr\n");
  return 4;
}
