/* The Datapath's lb_* methods (lb_binding.c), for module.c's method table. */
#ifndef KP_LB_BINDING_H
#define KP_LB_BINDING_H

#include <Python.h>

#include "datapath.h"

PyObject *lb_py_configure(struct datapath *dp, PyObject *args);
PyObject *lb_py_set_vip(struct datapath *dp, PyObject *args);
PyObject *lb_py_delete_vip(struct datapath *dp, PyObject *arg);
PyObject *lb_py_flush(struct datapath *dp, PyObject *args);
PyObject *lb_py_set_hash_key(struct datapath *dp, PyObject *args);
PyObject *lb_py_stats(struct datapath *dp, PyObject *args);
PyObject *lb_py_sessions(struct datapath *dp, PyObject *args);

#endif
