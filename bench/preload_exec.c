/* What LD_PRELOAD of a library costs a program that is not Python: fork + execve the program
 * many times, with no LD_PRELOAD and with each library given, in alternating blocks (so that
 * drifting machine load hits every condition alike), and report per condition the wall time
 * per run (fork to reaped) and the children's CPU time per run (getrusage RUSAGE_CHILDREN,
 * user + system), each as the median over blocks of the block's mean, and the cost of each
 * library as the median over blocks of (the library's block mean - the baseline's in the same
 * block), with the interquartile range of those paired differences: the machine's load drifts
 * (a shared 2-core host), and pairing within a block cancels most of it.
 *
 *   cc -O2 -Wall -o /tmp/preload_exec bench/preload_exec.c
 *   taskset -c 1 /tmp/preload_exec -n 4000 -b 100 -l old.so -l new.so -- /bin/true
 *   taskset -c 1 /tmp/preload_exec -n 200 -b 10 -l new.so -- /bin/sh bench/preload_loop.sh
 *
 * The program's stdout and stderr go to /dev/null. The environment is the driver's, without
 * LD_PRELOAD, plus LD_PRELOAD=<library> for a library's condition.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_COND 8

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static double children_cpu_us(void) {
  struct rusage r;
  getrusage(RUSAGE_CHILDREN, &r);
  return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e6 + r.ru_utime.tv_usec + r.ru_stime.tv_usec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* environ without LD_PRELOAD, with `preload` (an "LD_PRELOAD=..." string) appended if set. */
static char **make_env(const char *preload) {
  int n = 0;
  while (environ[n]) n++;
  char **e = calloc(n + 2, sizeof *e);
  int k = 0;
  for (int i = 0; i < n; i++)
    if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0) e[k++] = environ[i];
  if (preload) e[k++] = (char *)preload;
  e[k] = NULL;
  return e;
}

static void run_once(char **argv, char **envp, int devnull) {
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(2);
  }
  if (pid == 0) {
    dup2(devnull, 1);
    dup2(devnull, 2);
    execve(argv[0], argv, envp);
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 127) {
    fprintf(stderr, "child failed (status %d)\n", status);
    exit(2);
  }
}

int main(int argc, char **argv) {
  int runs = 2000, block = 100, nlib = 0, opt;
  const char *libs[MAX_COND];
  while ((opt = getopt(argc, argv, "+n:b:l:")) != -1) {
    switch (opt) {
      case 'n': runs = atoi(optarg); break;
      case 'b': block = atoi(optarg); break;
      case 'l':
        if (nlib + 1 >= MAX_COND) return 2;
        libs[nlib++] = optarg;
        break;
      default:
        fprintf(stderr, "usage: %s [-n runs] [-b block] [-l lib.so]... -- program args\n", argv[0]);
        return 2;
    }
  }
  if (optind >= argc || block <= 0 || runs < block) {
    fprintf(stderr, "usage: %s [-n runs] [-b block] [-l lib.so]... -- program args\n", argv[0]);
    return 2;
  }
  char **prog = argv + optind;
  int ncond = nlib + 1, nblocks = runs / block;
  char **envs[MAX_COND];
  envs[0] = make_env(NULL);
  for (int c = 1; c < ncond; c++) {
    char *s;
    if (asprintf(&s, "LD_PRELOAD=%s", libs[c - 1]) < 0) return 2;
    envs[c] = make_env(s);
  }
  int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  double *wall = calloc((size_t)ncond * nblocks, sizeof(double));
  double *cpu = calloc((size_t)ncond * nblocks, sizeof(double));
  /* Warm-up: page cache, dynamic loader caches. */
  for (int c = 0; c < ncond; c++)
    for (int i = 0; i < block / 10 + 1; i++) run_once(prog, envs[c], devnull);
  for (int b = 0; b < nblocks; b++) {
    for (int j = 0; j < ncond; j++) {
      int c = (b + j) % ncond; /* rotate the order of conditions from block to block */
      double w0 = now_us(), c0 = children_cpu_us();
      for (int i = 0; i < block; i++) run_once(prog, envs[c], devnull);
      wall[c * nblocks + b] = (now_us() - w0) / block;
      cpu[c * nblocks + b] = (children_cpu_us() - c0) / block;
    }
  }
  printf("%d runs per condition in %d blocks of %d: %s ...\n", nblocks * block, nblocks, block, prog[0]);
  printf("%-32s %10s %10s %22s %22s\n", "condition", "wall us", "cpu us", "paired wall delta [IQR]",
         "paired cpu delta [IQR]");
  double *d = calloc(nblocks, sizeof(double));
  double w_base = 0, c_base = 0;
  for (int c = 0; c < ncond; c++) {
    double q[2][3];
    for (int k = 0; k < 2; k++) {
      double *x = k ? cpu : wall;
      for (int b = 0; b < nblocks; b++) d[b] = x[c * nblocks + b] - x[b];
      qsort(d, nblocks, sizeof *d, cmp);
      q[k][0] = d[nblocks / 4];
      q[k][1] = median(d, nblocks);
      q[k][2] = d[(3 * nblocks) / 4 < nblocks ? (3 * nblocks) / 4 : nblocks - 1];
    }
    for (int b = 0; b < nblocks; b++) d[b] = wall[c * nblocks + b];
    double w = median(d, nblocks);
    for (int b = 0; b < nblocks; b++) d[b] = cpu[c * nblocks + b];
    double u = median(d, nblocks);
    if (c == 0) {
      w_base = w;
      c_base = u;
      printf("%-32s %10.1f %10.1f\n", "no LD_PRELOAD", w, u);
      continue;
    }
    const char *name = strrchr(libs[c - 1], '/') ? strrchr(libs[c - 1], '/') + 1 : libs[c - 1];
    printf("%-32s %10.1f %10.1f %+8.1f %+5.1f%% [%+.0f,%+.0f] %+8.1f %+5.1f%% [%+.0f,%+.0f]\n", name, w, u,
           q[0][1], 100 * q[0][1] / w_base, q[0][0], q[0][2], q[1][1], 100 * q[1][1] / c_base, q[1][0],
           q[1][2]);
  }
  return 0;
}
