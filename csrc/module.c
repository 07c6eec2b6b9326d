/* The Python module anomaly_kernels._C. It holds no functions: importing it loads this shared
 * library, whose static initialisers register every operator with the PyTorch dispatcher
 * (see ops.cpp). Only the limited C API is used, so one build serves every CPython >= 3.11. */
/* Py_LIMITED_API comes from the build (CMake USE_SABI 3.11). */
#include <Python.h>

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_C", "Native operators of anomaly_kernels (registered in torch.ops).",
    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
