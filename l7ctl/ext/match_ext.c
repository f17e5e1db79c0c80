// SPDX-License-Identifier: GPL-2.0
/*
 * l7ctl._match - the kernel's rule matcher (kmod/core/match.c) for Python.
 *
 *   t = _match.Table(blob)            # validates; ValueError(why) if refused
 *   rule, preds = t.match(svc, method, host, path, query, headers, client)
 *   t.result(svc, method, host, path, query, headers, client) -> dict:
 *       kt_match()'s struct kt_match_result (rule, action, pool, status,
 *       location, body, line)
 *   t.bench(svc, requests, iterations) -> nanoseconds per match
 *
 * requests/headers use bytes; client is None or the packed address (4 or
 * 16 bytes).  rule is -1 when no rule matched.  The blob is copied into an
 * aligned buffer owned by the Table.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <time.h>

#include "match.h"

typedef struct {
	PyObject_HEAD
	void *blob;
	struct kt_rules rules;
	u32 *scratch;
	u32 scratch_words;
} TableObject;

static void Table_dealloc(TableObject *self)
{
	free(self->blob);
	free(self->scratch);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Table_init(TableObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "blob", NULL };
	Py_buffer buf;
	const char *why = NULL;
	size_t n;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "y*", kwlist, &buf))
		return -1;
	free(self->blob);
	free(self->scratch);
	self->blob = NULL;
	self->scratch = NULL;
	n = (size_t)buf.len;
	self->blob = aligned_alloc(8, (n + 8) & ~(size_t)7);
	if (!self->blob) {
		PyBuffer_Release(&buf);
		PyErr_NoMemory();
		return -1;
	}
	memcpy(self->blob, buf.buf, n);
	PyBuffer_Release(&buf);
	if (kt_rules_validate(&self->rules, self->blob, n, &why)) {
		PyErr_SetString(PyExc_ValueError, why ? why : "invalid table");
		return -1;
	}
	self->scratch_words = kt_match_scratch_words(&self->rules);
	self->scratch = calloc(self->scratch_words + 1, sizeof(u32));
	if (!self->scratch) {
		PyErr_NoMemory();
		return -1;
	}
	kt_match_scratch_init(self->scratch, self->scratch_words);
	return 0;
}

/* A parsed request kept alive by the Python objects it points into. */
struct req_holder {
	struct kt_match_req req;
	struct kt_match_header *hdrs;
	PyObject *headers_fast;
};

static int get_slice(PyObject *o, struct kt_match_slice *s, const char *what)
{
	char *p;
	Py_ssize_t n;

	if (!PyBytes_Check(o)) {
		PyErr_Format(PyExc_TypeError, "%s must be bytes", what);
		return -1;
	}
	if (PyBytes_AsStringAndSize(o, &p, &n) < 0)
		return -1;
	s->ptr = (const u8 *)p;
	s->len = (u32)n;
	return 0;
}

static int fill_req(struct req_holder *h, PyObject *method, PyObject *host,
		    PyObject *path, PyObject *query, PyObject *headers,
		    PyObject *client)
{
	Py_ssize_t i, n;

	memset(h, 0, sizeof(*h));
	if (get_slice(method, &h->req.method, "method") ||
	    get_slice(host, &h->req.host, "host") ||
	    get_slice(path, &h->req.path, "path") ||
	    get_slice(query, &h->req.query, "query"))
		return -1;
	h->headers_fast = PySequence_Fast(headers, "headers must be a sequence");
	if (!h->headers_fast)
		return -1;
	n = PySequence_Fast_GET_SIZE(h->headers_fast);
	h->hdrs = calloc((size_t)n + 1, sizeof(*h->hdrs));
	if (!h->hdrs) {
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < n; i++) {
		PyObject *t = PySequence_Fast_GET_ITEM(h->headers_fast, i);

		if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2) {
			PyErr_SetString(PyExc_TypeError,
					"headers must be (name, value) tuples");
			return -1;
		}
		if (get_slice(PyTuple_GET_ITEM(t, 0), &h->hdrs[i].name, "header name") ||
		    get_slice(PyTuple_GET_ITEM(t, 1), &h->hdrs[i].value, "header value"))
			return -1;
	}
	h->req.headers = h->hdrs;
	h->req.nheaders = (u32)n;
	if (client != Py_None) {
		char *p;
		Py_ssize_t an;

		if (!PyBytes_Check(client) || PyBytes_AsStringAndSize(client, &p, &an) < 0 ||
		    (an != 4 && an != 16)) {
			PyErr_SetString(PyExc_TypeError,
					"client must be None or 4 or 16 bytes");
			return -1;
		}
		h->req.family = an == 4 ? KT_MATCH_AF_INET : KT_MATCH_AF_INET6;
		memcpy(h->req.addr, p, (size_t)an);
	}
	return 0;
}

static void free_req(struct req_holder *h)
{
	free(h->hdrs);
	Py_XDECREF(h->headers_fast);
}

static int check_svc(TableObject *self, unsigned int svc)
{
	if (!self->blob) {
		PyErr_SetString(PyExc_ValueError, "table not initialized");
		return -1;
	}
	if (svc >= kt_rules_nservices(&self->rules)) {
		PyErr_SetString(PyExc_IndexError, "no such service");
		return -1;
	}
	return 0;
}

static PyObject *Table_match(TableObject *self, PyObject *args)
{
	unsigned int svc;
	PyObject *method, *host, *path, *query, *headers, *client, *list;
	struct req_holder h;
	struct kt_match_result res;
	u32 *preds, np = 0, rule, i, cap;

	if (!PyArg_ParseTuple(args, "IOOOOOO", &svc, &method, &host, &path,
			      &query, &headers, &client))
		return NULL;
	if (check_svc(self, svc))
		return NULL;
	if (fill_req(&h, method, host, path, query, headers, client)) {
		free_req(&h);
		return NULL;
	}
	cap = self->scratch_words + 1;
	preds = calloc(cap, sizeof(u32));
	if (!preds) {
		free_req(&h);
		return PyErr_NoMemory();
	}
	rule = kt_match_trace(&self->rules, svc, &h.req, self->scratch, &res,
			      preds, cap, &np);
	free_req(&h);
	list = PyList_New(0);
	for (i = 0; list && i < np && i < cap; i++) {
		PyObject *v = PyLong_FromUnsignedLong(preds[i]);

		if (!v || PyList_Append(list, v)) {
			Py_XDECREF(v);
			Py_CLEAR(list);
			break;
		}
		Py_DECREF(v);
	}
	free(preds);
	if (!list)
		return NULL;
	return Py_BuildValue("(lN)", rule == KT_RULES_NONE ? -1L : (long)rule, list);
}

static PyObject *Table_result(TableObject *self, PyObject *args)
{
	unsigned int svc;
	PyObject *method, *host, *path, *query, *headers, *client;
	struct req_holder h;
	struct kt_match_result res;
	u32 rule;

	if (!PyArg_ParseTuple(args, "IOOOOOO", &svc, &method, &host, &path,
			      &query, &headers, &client))
		return NULL;
	if (check_svc(self, svc))
		return NULL;
	if (fill_req(&h, method, host, path, query, headers, client)) {
		free_req(&h);
		return NULL;
	}
	rule = kt_match(&self->rules, svc, &h.req, self->scratch, &res);
	free_req(&h);
	return Py_BuildValue(
		"{s:l,s:I,s:l,s:I,s:y#,s:y#,s:I}",
		"rule", rule == KT_RULES_NONE ? -1L : (long)rule,
		"action", res.action,
		"pool", res.pool == KT_RULES_NONE ? -1L : (long)res.pool,
		"status", res.status,
		"location", res.location.len ? (const char *)res.location.ptr : "",
		(Py_ssize_t)res.location.len,
		"body", res.body.len ? (const char *)res.body.ptr : "",
		(Py_ssize_t)res.body.len, "line", res.line);
}

static PyObject *Table_bench(TableObject *self, PyObject *args)
{
	unsigned int svc;
	unsigned long iters, k;
	PyObject *reqs, *fast;
	Py_ssize_t n, i;
	struct req_holder *hs;
	struct kt_match_result res;
	struct timespec t0, t1;
	volatile u32 sink = 0;
	double ns;

	if (!PyArg_ParseTuple(args, "IOk", &svc, &reqs, &iters))
		return NULL;
	if (check_svc(self, svc))
		return NULL;
	fast = PySequence_Fast(reqs, "requests must be a sequence");
	if (!fast)
		return NULL;
	n = PySequence_Fast_GET_SIZE(fast);
	if (!n || !iters) {
		Py_DECREF(fast);
		PyErr_SetString(PyExc_ValueError, "need requests and iterations");
		return NULL;
	}
	hs = calloc((size_t)n, sizeof(*hs));
	if (!hs) {
		Py_DECREF(fast);
		return PyErr_NoMemory();
	}
	for (i = 0; i < n; i++) {
		PyObject *t = PySequence_Fast_GET_ITEM(fast, i);

		if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 6 ||
		    fill_req(&hs[i], PyTuple_GET_ITEM(t, 0), PyTuple_GET_ITEM(t, 1),
			     PyTuple_GET_ITEM(t, 2), PyTuple_GET_ITEM(t, 3),
			     PyTuple_GET_ITEM(t, 4), PyTuple_GET_ITEM(t, 5))) {
			if (!PyErr_Occurred())
				PyErr_SetString(PyExc_TypeError,
						"each request is a 6-tuple");
			n = i + 1;
			goto fail;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (k = 0; k < iters; k++)
		for (i = 0; i < n; i++)
			sink += kt_match(&self->rules, svc, &hs[i].req,
					 self->scratch, &res);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	(void)sink;
	for (i = 0; i < n; i++)
		free_req(&hs[i]);
	free(hs);
	Py_DECREF(fast);
	ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
	return PyFloat_FromDouble(ns / ((double)iters * (double)n));
fail:
	for (i = 0; i < n; i++)
		free_req(&hs[i]);
	free(hs);
	Py_DECREF(fast);
	return NULL;
}

static PyObject *addr_obj(u8 family, const u8 *addr)
{
	return PyBytes_FromStringAndSize((const char *)addr,
					 family == KT_MATCH_AF_INET ? 4 : 16);
}

static PyObject *Table_service(TableObject *self, PyObject *args)
{
	unsigned int i;
	struct kt_rules_service_info s;

	if (!PyArg_ParseTuple(args, "I", &i) || check_svc(self, i))
		return NULL;
	kt_rules_service(&self->rules, i, &s);
	/* limits in KT_LIMIT_* order, timeouts in KT_TIMEOUT_* order */
	return Py_BuildValue(
		"{s:y#,s:i,s:N,s:i,s:I,s:(IIIIIII),s:(IIII),s:I,s:I,s:I}",
		"name", s.name.ptr, (Py_ssize_t)s.name.len, "family", s.family,
		"addr", addr_obj(s.family, s.addr), "port", s.port,
		"flags", s.flags, "limits", s.limits[KT_LIMIT_REQUEST_LINE],
		s.limits[KT_LIMIT_HEADER_SIZE], s.limits[KT_LIMIT_HEADERS],
		s.limits[KT_LIMIT_CONNECTIONS],
		s.limits[KT_LIMIT_SOURCE_CONNECTIONS],
		s.limits[KT_LIMIT_SOURCE_RATE], s.limits[KT_LIMIT_BACKLOG],
		"timeouts_ms", s.timeouts_ms[KT_TIMEOUT_HEADER],
		s.timeouts_ms[KT_TIMEOUT_IDLE], s.timeouts_ms[KT_TIMEOUT_CONNECT],
		s.timeouts_ms[KT_TIMEOUT_BACKEND], "nrules", s.nrules,
		"log_mode", s.log_mode, "log_sample", s.log_sample);
}

static PyObject *Table_pool(TableObject *self, PyObject *args)
{
	unsigned int i, k;
	struct kt_rules_pool_info p;
	struct kt_rules_server_info sv;
	PyObject *servers;

	if (!PyArg_ParseTuple(args, "I", &i))
		return NULL;
	if (!self->blob || i >= kt_rules_npools(&self->rules)) {
		PyErr_SetString(PyExc_IndexError, "no such pool");
		return NULL;
	}
	kt_rules_pool(&self->rules, i, &p);
	servers = PyList_New(0);
	for (k = 0; servers && k < p.nservers; k++) {
		PyObject *o;

		kt_rules_server(&self->rules, p.first_server + k, &sv);
		o = Py_BuildValue("{s:i,s:N,s:i,s:i,s:i,s:K}", "family", sv.family,
				  "addr", addr_obj(sv.family, sv.addr), "port",
				  sv.port, "weight", sv.weight, "state", sv.state,
				  "id", (unsigned long long)sv.id);
		if (!o || PyList_Append(servers, o)) {
			Py_XDECREF(o);
			Py_CLEAR(servers);
		} else {
			Py_DECREF(o);
		}
	}
	if (!servers)
		return NULL;
	return Py_BuildValue(
		"{s:y#,s:I,s:N,s:{s:I,s:I,s:I,s:I,s:I,s:y#,s:y#,s:I,s:I},"
		"s:{s:I,s:y#,s:I}}",
		"name", p.name.ptr, (Py_ssize_t)p.name.len,
		"scheduler", p.scheduler, "servers", servers,
		"check", "kind", p.check.kind, "interval_ms", p.check.interval_ms,
		"timeout_ms", p.check.timeout_ms, "rise", p.check.rise,
		"fall", p.check.fall,
		"request", p.check.request.ptr, (Py_ssize_t)p.check.request.len,
		"host", p.check.host.ptr, (Py_ssize_t)p.check.host.len,
		"expect_lo", p.check.expect_lo, "expect_hi", p.check.expect_hi,
		"persist", "kind", p.persist.kind,
		"cookie", p.persist.cookie.ptr, (Py_ssize_t)p.persist.cookie.len,
		"source_timeout_ms", p.persist.source_timeout_ms);
}

static PyObject *Table_get_nservices(TableObject *self, void *c)
{
	return PyLong_FromUnsignedLong(self->blob ? kt_rules_nservices(&self->rules) : 0);
}

static PyObject *Table_get_npools(TableObject *self, void *c)
{
	return PyLong_FromUnsignedLong(self->blob ? kt_rules_npools(&self->rules) : 0);
}

static PyObject *Table_get_max_conns(TableObject *self, void *c)
{
	return PyLong_FromUnsignedLong(self->blob ? kt_rules_max_conns(&self->rules) : 0);
}

static PyObject *Table_get_scratch(TableObject *self, void *c)
{
	return PyLong_FromUnsignedLong(self->scratch_words);
}

static PyMethodDef Table_methods[] = {
	{ "match", (PyCFunction)Table_match, METH_VARARGS,
	  "match(svc, method, host, path, query, headers, client) -> (rule, preds)" },
	{ "result", (PyCFunction)Table_result, METH_VARARGS,
	  "result(svc, method, host, path, query, headers, client) -> dict" },
	{ "bench", (PyCFunction)Table_bench, METH_VARARGS,
	  "bench(svc, requests, iterations) -> ns per match" },
	{ "service", (PyCFunction)Table_service, METH_VARARGS, "service(i) -> dict" },
	{ "pool", (PyCFunction)Table_pool, METH_VARARGS, "pool(i) -> dict" },
	{ NULL, NULL, 0, NULL },
};

static PyGetSetDef Table_getset[] = {
	{ "nservices", (getter)Table_get_nservices, NULL, "number of services", NULL },
	{ "npools", (getter)Table_get_npools, NULL, "number of pools", NULL },
	{ "scratch_words", (getter)Table_get_scratch, NULL, "scratch size", NULL },
	{ "max_conns", (getter)Table_get_max_conns, NULL,
	  "namespace-wide connection limit (0: the module's default)", NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

static PyTypeObject TableType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "l7ctl._match.Table",
	.tp_basicsize = sizeof(TableObject),
	.tp_dealloc = (destructor)Table_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A validated compiled rules table.",
	.tp_methods = Table_methods,
	.tp_getset = Table_getset,
	.tp_init = (initproc)Table_init,
	.tp_new = PyType_GenericNew,
};

static struct PyModuleDef match_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "l7ctl._match",
	.m_doc = "The ktcpvs rule matcher (kmod/core/match.c).",
	.m_size = -1,
};

PyMODINIT_FUNC PyInit__match(void)
{
	PyObject *m;

	if (PyType_Ready(&TableType) < 0)
		return NULL;
	m = PyModule_Create(&match_module);
	if (!m)
		return NULL;
	Py_INCREF(&TableType);
	if (PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0) {
		Py_DECREF(&TableType);
		Py_DECREF(m);
		return NULL;
	}
	PyModule_AddIntConstant(m, "VERSION_MAJOR", KT_RULES_VERSION_MAJOR);
	PyModule_AddIntConstant(m, "MAX_SIZE", KT_RULES_MAX_SIZE);
	return m;
}
