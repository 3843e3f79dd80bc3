/* A C extension that burns CPU inside its own shared object: `_spin.spin(seconds)` loops for
 * that much of the calling thread's CPU time, checking the clock rarely (a clock read is a
 * system call, whose samples would not be in this file). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

static double thread_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static PyObject *spin(PyObject *self, PyObject *arg) {
    double seconds = PyFloat_AsDouble(arg);
    if (seconds == -1.0 && PyErr_Occurred())
        return NULL;
    double end = thread_seconds() + seconds;
    volatile unsigned long x = 0;
    while (thread_seconds() < end)
        for (unsigned long i = 0; i < 2000000; i++)
            x += i;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"spin", spin, METH_O, "Burn CPU in C."}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_spin", NULL, -1, methods};
PyMODINIT_FUNC PyInit__spin(void) { return PyModule_Create(&module); }
