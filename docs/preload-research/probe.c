/* probe.c - LD_PRELOAD experiment: recognise a Python process by symbol and
 * add a PEP 578 audit hook from the library constructor, before Py_Initialize.
 * Build: gcc -O2 -shared -fPIC -o probe.so probe.c -ldl
 *        (add -DINTERPOSE_DLOPEN to also catch libpython loaded later by dlopen)
 * Env (all optional; read with getenv, so unaffected by python -E/-I):
 *   PROBE_LOG=path     append log lines here (default: stderr)
 *   PROBE_FILTER=a,b   log only events whose name starts with one of these
 *   PROBE_NARGS=n      log only the first n args of each event
 *   PROBE_QUIET=1      omit the "probe: ... AddAuditHook rc=" line
 *   PROBE_SOCK=path    also send "pid event arg0" as one SOCK_SEQPACKET message
 *   PROBE_TIME=1       print the time of the constructor's symbol check to stderr
 * Variant for 2.7/3.6/3.7 (no audit hooks): -DOPENPROBE -o openprobe.so: wraps the libc open family
 * and dlopen of absolute paths, logs .py, .pyc and .so files opened by a Python process to stderr. */
#define _GNU_SOURCE
#ifdef OPENPROBE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static int is_py = -1;
static void note(const char *fn, const char *p) {
    if (is_py < 0) is_py = dlsym(RTLD_DEFAULT, "Py_Initialize") != NULL;
    if (!is_py || !p) return;
    size_t n = strlen(p);
    if ((n > 3 && !strcmp(p + n - 3, ".py")) || (n > 4 && !strcmp(p + n - 4, ".pyc")) || (n > 3 && !strcmp(p + n - 3, ".so"))) {
        char b[600]; int k = snprintf(b, sizeof b, "[%d] %s %s\n", (int)getpid(), fn, p);
        (void)!write(2, b, k < (int)sizeof b ? k : (int)sizeof b - 1);
    }
}
#define WRAP_OPEN(name) int name(const char *p, int fl, ...) { \
    static int (*r)(const char *, int, ...); if (!r) r = dlsym(RTLD_NEXT, #name); \
    va_list ap; va_start(ap, fl); int mode = va_arg(ap, int); va_end(ap); \
    int fd = r(p, fl, mode); if (fd >= 0) note(#name, p); return fd; }
WRAP_OPEN(open) WRAP_OPEN(open64)
int openat(int d, const char *p, int fl, ...) { static int (*r)(int, const char *, int, ...); if (!r) r = dlsym(RTLD_NEXT, "openat");
    va_list ap; va_start(ap, fl); int mode = va_arg(ap, int); va_end(ap); int fd = r(d, p, fl, mode); if (fd >= 0) note("openat", p); return fd; }
int openat64(int d, const char *p, int fl, ...) { static int (*r)(int, const char *, int, ...); if (!r) r = dlsym(RTLD_NEXT, "openat64");
    va_list ap; va_start(ap, fl); int mode = va_arg(ap, int); va_end(ap); int fd = r(d, p, fl, mode); if (fd >= 0) note("openat64", p); return fd; }
FILE *fopen(const char *p, const char *m) { static FILE *(*r)(const char *, const char *); if (!r) r = dlsym(RTLD_NEXT, "fopen");
    FILE *f = r(p, m); if (f) note("fopen", p); return f; }
FILE *fopen64(const char *p, const char *m) { static FILE *(*r)(const char *, const char *); if (!r) r = dlsym(RTLD_NEXT, "fopen64");
    FILE *f = r(p, m); if (f) note("fopen64", p); return f; }
/* Absolute paths do not depend on the caller's RUNPATH, so wrapping those is safe;
 * other names go to the real dlopen by a sibling call (a jmp at -O2). */
static void *(*real_dlopen)(const char *, int);
__attribute__((noinline)) static void *dlopen_abs(const char *p, int m) { void *h = real_dlopen(p, m); if (h) note("dlopen", p); return h; }
void *dlopen(const char *p, int m) {
    if (!real_dlopen) real_dlopen = dlsym(RTLD_NEXT, "dlopen");
    if (p && p[0] == '/') return dlopen_abs(p, m);
    return real_dlopen(p, m);
}
#else /* !OPENPROBE: the audit-hook probe */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

typedef struct _object PyObject;
typedef int (*audit_hook_t)(const char *, PyObject *, void *);
static int (*p_AddAuditHook)(audit_hook_t, void *);
static int (*p_IsInitialized)(void);
static long (*p_TupleSize)(PyObject *);
static PyObject *(*p_TupleGetItem)(PyObject *, long);
static PyObject *(*p_Str)(PyObject *);
static const char *(*p_AsUTF8)(PyObject *);
static void (*p_DecRef)(PyObject *);
static void (*p_ErrClear)(void);
static PyObject *p_None;
static int logfd = 2, sockfd = -1, installed;
static char filter[256];
static long nargs = -1;

static void config(void);
static void logline(const char *buf, size_t n) { (void)!write(logfd, buf, n); }

static int wanted(const char *ev) {
    if (!filter[0]) return 1;
    char tmp[256]; strcpy(tmp, filter);
    for (char *s = strtok(tmp, ","); s; s = strtok(NULL, ","))
        if (strncmp(ev, s, strlen(s)) == 0) return 1;
    return 0;
}

/* Runs with the GIL held, in the thread that raised the event. */
static int hook(const char *event, PyObject *args, void *ud) {
    (void)ud;
    if (!wanted(event)) return 0;
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "[%d] %s", (int)getpid(), event);
    long sz = p_TupleSize(args);
    if (nargs >= 0 && sz > nargs) sz = nargs;
    char first[512] = "";
    for (long i = 0; i < sz && n < (int)sizeof buf - 8; i++) {
        PyObject *o = p_TupleGetItem(args, i);
        const char *s = "?";
        PyObject *str = NULL;
        if (o == p_None) s = "None";
        else if ((str = p_Str(o)) && (s = p_AsUTF8(str))) ;
        else { s = "<err>"; p_ErrClear(); }
        n += snprintf(buf + n, sizeof buf - n, " | %.160s", s);
        if (i == 0) snprintf(first, sizeof first, "%s", s);
        if (str) p_DecRef(str);
    }
    if (n >= (int)sizeof buf) n = sizeof buf - 2;
    buf[n++] = '\n';
    logline(buf, n);
    if (sockfd >= 0) {
        char m[600];
        int k = snprintf(m, sizeof m, "%d %s %s", (int)getpid(), event, first);
        if (send(sockfd, m, k < (int)sizeof m ? k : (int)sizeof m - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            char e[96]; int en = snprintf(e, sizeof e, "[%d] SENDFAIL errno=%d (%s)\n", (int)getpid(), errno, event);
            logline(e, en);
        }
    }
    return 0;
}

static int resolve(void *h) {
    p_AddAuditHook = dlsym(h, "PySys_AddAuditHook");
    if (!p_AddAuditHook) return 0;
    p_IsInitialized = dlsym(h, "Py_IsInitialized");
    p_TupleSize = dlsym(h, "PyTuple_Size");
    p_TupleGetItem = dlsym(h, "PyTuple_GetItem");
    p_Str = dlsym(h, "PyObject_Str");
    p_AsUTF8 = dlsym(h, "PyUnicode_AsUTF8");
    p_DecRef = dlsym(h, "Py_DecRef");
    p_ErrClear = dlsym(h, "PyErr_Clear");
    p_None = dlsym(h, "_Py_NoneStruct");
    return 1;
}

static void install(const char *where) {
    char b[256];
    int init = p_IsInitialized ? p_IsInitialized() : -1;
    int rc = -99;
    if (init == 0) rc = p_AddAuditHook(hook, NULL);
    /* if already initialised we would need PyGILState_Ensure first */
    installed = (rc == 0);
    if (!getenv("PROBE_QUIET")) {
        int n = snprintf(b, sizeof b, "[%d] probe: %s: PySys_AddAuditHook found, Py_IsInitialized=%d, AddAuditHook rc=%d\n",
                         (int)getpid(), where, init, rc);
        logline(b, n);
    }
}

__attribute__((constructor)) static void probe_init(void) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int found = resolve(RTLD_DEFAULT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const char *q = getenv("PROBE_QUIET");
    if (getenv("PROBE_TIME")) {
        char b[128];
        int n = snprintf(b, sizeof b, "[%d] probe: constructor check %ld ns, found=%d\n", (int)getpid(),
                         (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec), found);
        (void)!write(2, b, n);
    }
    if (!found) return;                 /* not Python (yet): cost is one dlsym */
    (void)q;
    config();
    install("constructor");
}

static void config(void) {
    const char *lp = getenv("PROBE_LOG");
    if (lp) { int fd = open(lp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644); if (fd >= 0) logfd = fd; }
    const char *f = getenv("PROBE_FILTER");
    if (f) snprintf(filter, sizeof filter, "%s", f);
    if (getenv("PROBE_NARGS")) nargs = atol(getenv("PROBE_NARGS"));
    const char *sp = getenv("PROBE_SOCK");
    if (sp) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", sp);
        sockfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (sockfd >= 0 && connect(sockfd, (struct sockaddr *)&a, sizeof a) < 0) { close(sockfd); sockfd = -1; }
    }
}

#ifdef INTERPOSE_DLOPEN
/* glibc's dlopen searches the CALLER's DT_RUNPATH; a wrapper that calls the real
 * dlopen becomes the caller. So only names containing "libpython" go through the
 * wrapper; everything else is a sibling call (compiled to a jmp at -O2), which
 * keeps the original return address and so the caller's RUNPATH. */
static void *(*real_dlopen)(const char *, int);
__attribute__((noinline)) static void *dlopen_python(const char *file, int mode) {
    void *h = real_dlopen(file, mode);
    if (h && !installed && !p_AddAuditHook && resolve(h)) {
        config();
        install(file);
    }
    return h;
}
void *dlopen(const char *file, int mode) {
    if (__builtin_expect(!real_dlopen, 0)) real_dlopen = dlsym(RTLD_NEXT, "dlopen");
    if (file && !installed && strstr(file, "libpython")) return dlopen_python(file, mode);
    return real_dlopen(file, mode);
}
#endif
#endif
