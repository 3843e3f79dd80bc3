/* Calls every function of the open family the preloaded library wraps (open, open64, openat,
 * openat64, fopen, fopen64) on files that exist, are missing, or cannot be read (secret.pyc,
 * root's and 0600: run as nobody), and prints each result with the errno it left: "errno 1234"
 * after a success means errno was not touched. Run in a directory prepared by the tests
 * (m.py, m.pyc, lib.so, secret.pyc; writable, for new.pyc, which it removes again).
 *
 * Built plain, it is a program that is not Python: its output must be byte-identical with and
 * without the library (tests/non_python.rs). Built with -DFAKE_PYTHON -rdynamic it exports
 * Py_Initialize and no PySys_AddAuditHook, so the library takes it for CPython 2.7-3.7 and
 * reports its opens (open mode, tests/interpreters.rs): the same output, but for descriptor
 * numbers (the library's socket takes one), and the messages must match the lines.
 *
 * Line format: "CALL PATH (dfd D, flags 0OCTAL): fd N errno E" or ": -1 errno E"; fopen lines
 * give the mode string instead of dfd and flags. An optional second argument N repeats an
 * open of m.pyc and of missing.pyc N times and prints how often the result and errno were
 * right (enough reports to fill a daemon's queue that is not read). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef FAKE_PYTHON
void Py_Initialize(void) {}
#endif

#define UNTOUCHED 1234

static void result(const char *call, const char *path, const char *how, int fd, int err) {
  if (fd >= 0)
    printf("%s %s (%s): fd %d errno %d\n", call, path, how, fd, err);
  else
    printf("%s %s (%s): -1 errno %d\n", call, path, how, err);
}

static void call_open(const char *call, int dfd, const char *path, int flags, mode_t mode) {
  char how[64];
  int fd, err;
  errno = UNTOUCHED;
  if (!strcmp(call, "open"))
    fd = open(path, flags, mode);
  else if (!strcmp(call, "open64"))
    fd = open64(path, flags, mode);
  else if (!strcmp(call, "openat"))
    fd = openat(dfd, path, flags, mode);
  else
    fd = openat64(dfd, path, flags, mode);
  err = errno;
  snprintf(how, sizeof how, "dfd %d, flags 0%o", call[4] == 'a' ? dfd : AT_FDCWD, flags);
  result(call, path, how, fd, err);
  if (fd >= 0) close(fd);
}

static void call_fopen(const char *call, const char *path, const char *mode) {
  FILE *f;
  int err;
  errno = UNTOUCHED;
  f = !strcmp(call, "fopen") ? fopen(path, mode) : fopen64(path, mode);
  err = errno;
  result(call, path, mode, f ? fileno(f) : -1, err);
  if (f) fclose(f);
}

int main(int argc, char **argv) {
  static const char *paths[] = {"m.py", "m.pyc", "lib.so", "missing.pyc", "missing.py",
                                "secret.pyc", "sub/../m.pyc"};
  static const char *calls[] = {"open", "open64", "openat", "openat64"};
  struct stat st;
  int dfd;
  if (argc < 2 || chdir(argv[1]) != 0) return 2;
  umask(022);
  dfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  printf("dir fd %d\n", dfd);
  for (size_t p = 0; p < sizeof paths / sizeof *paths; p++) {
    for (size_t c = 0; c < sizeof calls / sizeof *calls; c++)
      call_open(calls[c], dfd, paths[p], O_RDONLY | O_CLOEXEC, 0);
    call_fopen("fopen", paths[p], "re");
    call_fopen("fopen64", paths[p], "r");
  }
  /* The mode reaches the real function when O_CREAT asks for it. */
  call_open("open", dfd, "new.pyc", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (stat("new.pyc", &st) == 0) printf("new.pyc mode 0%o\n", st.st_mode & 07777);
  call_open("openat", dfd, "new.pyc", O_WRONLY | O_CREAT | O_EXCL, 0600);
  call_fopen("fopen", "new.pyc", "a+");
  unlink("new.pyc");
  /* Failures before the path is read (an invalid mode) and with a bad directory. */
  call_fopen("fopen", "missing.pyc", "q");
  call_open("openat", -1, "m.pyc", O_RDONLY, 0);
  call_open("open", dfd, "/nonexistent-pyusage/x.pyc", O_RDONLY, 0);
  close(dfd);
  if (argc > 2) {
    int n = atoi(argv[2]), opened = 0, kept = 0, failed = 0, enoent = 0;
    for (int i = 0; i < n; i++) {
      errno = UNTOUCHED;
      int fd = open("m.pyc", O_RDONLY | O_CLOEXEC);
      opened += fd >= 0;
      kept += errno == UNTOUCHED;
      if (fd >= 0) close(fd);
      errno = UNTOUCHED;
      failed += open("missing.pyc", O_RDONLY | O_CLOEXEC) == -1;
      enoent += errno == ENOENT;
    }
    printf("repeat %d: opened %d, errno kept %d; failed %d, ENOENT %d\n", n, opened, kept, failed,
           enoent);
  }
  fflush(stdout);
  return 0;
}
