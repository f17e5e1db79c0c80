// SPDX-License-Identifier: GPL-2.0
/*
 * l7ctl._http - the kernel's HTTP parser (kmod/core/http.c) for Python.
 *
 * parse() drives the parser exactly like the kernel data path does: the
 * head is parsed with kt_http_parse() over a growing contiguous buffer, the
 * body with kt_http_body_feed() on whatever bytes are available, and
 * pipelined messages follow one another.  `split` decides how the input
 * arrives (all at once, N bytes at a time, or cut at given offsets), so
 * tests can check that the result never depends on it.  With skip_opaque,
 * body bytes the machine does not need to see (kt_http_body_opaque()) pass
 * unseen through kt_http_body_skip(), as the kernel's zero-copy relay does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "http.h"

struct feeder {
	Py_ssize_t total;
	Py_ssize_t avail;	/* bytes that have "arrived" */
	Py_ssize_t step;	/* > 0: step bytes at a time */
	Py_ssize_t *cuts;	/* or: sorted cut offsets */
	Py_ssize_t ncuts, next;
};

/* Let more bytes arrive; false at end of input. */
static bool feeder_more(struct feeder *f)
{
	if (f->avail >= f->total)
		return false;
	if (f->step > 0) {
		f->avail += f->step;
	} else {
		while (f->next < f->ncuts && f->cuts[f->next] <= f->avail)
			f->next++;
		f->avail = f->next < f->ncuts ? f->cuts[f->next++] : f->total;
	}
	if (f->avail > f->total)
		f->avail = f->total;
	return true;
}

static int feeder_init(struct feeder *f, PyObject *split, Py_ssize_t total)
{
	Py_ssize_t i, n;
	PyObject *seq;

	memset(f, 0, sizeof(*f));
	f->total = total;
	if (split == NULL || split == Py_None) {
		f->avail = total;
		return 0;
	}
	if (PyLong_Check(split)) {
		f->step = PyLong_AsSsize_t(split);
		if (f->step == -1 && PyErr_Occurred())
			return -1;
		if (f->step <= 0) {
			PyErr_SetString(PyExc_ValueError, "split must be > 0");
			return -1;
		}
		f->avail = f->step < total ? f->step : total;
		return 0;
	}
	seq = PySequence_Fast(split, "split must be None, an int or offsets");
	if (!seq)
		return -1;
	n = PySequence_Fast_GET_SIZE(seq);
	f->cuts = PyMem_Malloc((n + 1) * sizeof(*f->cuts));
	if (!f->cuts) {
		Py_DECREF(seq);
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < n; i++) {
		Py_ssize_t c = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(seq, i));

		if (c == -1 && PyErr_Occurred()) {
			Py_DECREF(seq);
			return -1;
		}
		if (c < 0 || (i > 0 && c < f->cuts[i - 1])) {
			Py_DECREF(seq);
			PyErr_SetString(PyExc_ValueError,
					"split offsets must be sorted and >= 0");
			return -1;
		}
		f->cuts[i] = c;
	}
	Py_DECREF(seq);
	f->ncuts = n;
	f->avail = 0;
	feeder_more(f);
	return 0;
}

static const char *const framing_names[] = {
	"none", "length", "chunked", "close", "tunnel",
};

static const char *const form_names[] = {
	"origin", "absolute", "authority", "asterisk",
};

static PyObject *bytes_at(const u8 *buf, u32 off, u32 len)
{
	return PyBytes_FromStringAndSize((const char *)buf + off, len);
}

static PyObject *refusal(int status, const char *why, Py_ssize_t off)
{
	return Py_BuildValue("{s:O,s:i,s:s,s:n}", "ok", Py_False,
			     "status", status, "error", why, "offset", off);
}

static int set_item(PyObject *d, const char *key, PyObject *v)
{
	int rc;

	if (!v)
		return -1;
	rc = PyDict_SetItemString(d, key, v);
	Py_DECREF(v);
	return rc;
}

static PyObject *headers_list(const struct kt_http_msg *m, const u8 *buf)
{
	PyObject *l = PyList_New(m->nfields);
	u32 i;

	if (!l)
		return NULL;
	for (i = 0; i < m->nfields; i++) {
		const struct kt_http_field *f = &m->fields[i];
		PyObject *t = Py_BuildValue("(y#y#)",
					    buf + f->name_off,
					    (Py_ssize_t)f->name_len,
					    buf + f->value_off,
					    (Py_ssize_t)f->value_len);

		if (!t) {
			Py_DECREF(l);
			return NULL;
		}
		PyList_SET_ITEM(l, i, t);
	}
	return l;
}

static PyObject *message_dict(const struct kt_http_msg *m, const u8 *buf,
			      const struct kt_http_body *b, Py_ssize_t start,
			      Py_ssize_t consumed)
{
	PyObject *d = PyDict_New();
	bool resp = m->flags & KT_HTTP_RESPONSE;

	if (!d)
		return NULL;
	if (set_item(d, "ok", Py_NewRef(Py_True)))
		goto fail;
	if (resp) {
		if (set_item(d, "status", PyLong_FromLong(m->status)) ||
		    set_item(d, "reason", bytes_at(buf, m->reason_off,
						   m->reason_len)))
			goto fail;
	} else {
		if (set_item(d, "method", bytes_at(buf, m->method_off,
						   m->method_len)) ||
		    set_item(d, "method_id", PyLong_FromLong(m->method)) ||
		    set_item(d, "target", bytes_at(buf, m->target_off,
						   m->target_len)) ||
		    set_item(d, "form", PyUnicode_FromString(
				form_names[m->form])) ||
		    set_item(d, "path", bytes_at(m->out, m->path_off,
						 m->path_len)) ||
		    set_item(d, "query", (m->flags & KT_HTTP_HAS_QUERY) ?
			     bytes_at(buf, m->query_off, m->query_len) :
			     Py_NewRef(Py_None)) ||
		    set_item(d, "host", (m->flags & KT_HTTP_HAS_HOST) ?
			     bytes_at(m->out, m->host_off, m->host_len) :
			     Py_NewRef(Py_None)))
			goto fail;
	}
	if (set_item(d, "version", PyLong_FromLong(m->version)) ||
	    set_item(d, "headers", headers_list(m, buf)) ||
	    set_item(d, "framing", PyUnicode_FromString(
			framing_names[m->framing])) ||
	    set_item(d, "content_length", m->framing == KT_HTTP_FR_LENGTH ?
		     PyLong_FromUnsignedLongLong(m->content_length) :
		     Py_NewRef(Py_None)) ||
	    set_item(d, "body_length",
		     PyLong_FromUnsignedLongLong(b->decoded)) ||
	    set_item(d, "keep_alive",
		     PyBool_FromLong(m->flags & KT_HTTP_KEEP_ALIVE)) ||
	    set_item(d, "upgrade",
		     PyBool_FromLong(m->flags & KT_HTTP_UPGRADE)) ||
	    set_item(d, "head_length", PyLong_FromUnsignedLong(m->head_len)) ||
	    set_item(d, "consumed", PyLong_FromSsize_t(consumed)) ||
	    set_item(d, "offset", PyLong_FromSsize_t(start)))
		goto fail;
	return d;
fail:
	Py_DECREF(d);
	return NULL;
}

static int method_id(const char *s, Py_ssize_t n)
{
	unsigned int i;
	const char *name;

	for (i = 1; (name = kt_http_method_name(i)) != NULL; i++)
		if ((Py_ssize_t)strlen(name) == n && !memcmp(name, s, n))
			return i;
	return KT_HTTP_M_OTHER;
}

struct opts {
	struct kt_http_limits lim;
	int response;
	int req_method;
	int skip_opaque;
};

static int append(PyObject *list, PyObject *item)
{
	int rc;

	if (!item)
		return -1;
	rc = PyList_Append(list, item);
	Py_DECREF(item);
	return rc;
}

/* Parse every message in data[0..total); the list of dicts. */
static PyObject *parse_all(const u8 *data, Py_ssize_t total,
			   const struct opts *o, PyObject *split)
{
	struct kt_http_field *fields = NULL;
	struct kt_http_msg m;
	struct kt_http_body b;
	struct feeder f;
	PyObject *out = NULL;
	u8 *obuf = NULL;
	u32 ocap = o->lim.request_line + KT_HTTP_HOST_MAX + 16;
	u32 fcap = o->lim.fields ? o->lim.fields : 1;
	Py_ssize_t start = 0, pos;
	size_t used;
	int rc, status;

	if (feeder_init(&f, split, total))
		return NULL;
	fields = PyMem_Malloc(fcap * sizeof(*fields));
	obuf = PyMem_Malloc(ocap);
	out = PyList_New(0);
	if (!fields || !obuf || !out) {
		if (!PyErr_Occurred())
			PyErr_NoMemory();
		goto fail;
	}

	while (start < total) {
		if (o->response)
			kt_http_resp_init(&m, &o->lim, fields, fcap,
					  o->req_method);
		else
			kt_http_req_init(&m, &o->lim, fields, fcap, obuf, ocap);
		/* head */
		for (;;) {
			rc = kt_http_parse(&m, data + start, f.avail - start);
			if (rc != KT_HTTP_AGAIN || !feeder_more(&f))
				break;
		}
		if (rc == KT_HTTP_ERROR) {
			if (append(out, refusal(m.status, m.reason,
						start + m.err_off)))
				goto fail;
			break;
		}
		if (rc == KT_HTTP_AGAIN) {
			if (kt_http_idle(&m))
				break;
			status = o->response ? 502 : 400;
			if (append(out, refusal(status, "incomplete head",
						total)))
				goto fail;
			break;
		}
		/* body */
		kt_http_body_init(&b, &m);
		pos = start + m.head_len;
		for (;;) {
			u64 op = kt_http_body_opaque(&b);

			if (o->skip_opaque && op && f.avail > pos) {
				if (op > (u64)(f.avail - pos))
					op = f.avail - pos;
				rc = kt_http_body_skip(&b, op);
				pos += (Py_ssize_t)op;
				if (rc != KT_HTTP_AGAIN)
					break;
				continue;
			}
			rc = kt_http_body_feed(&b, data + pos, f.avail - pos,
					       &used);
			pos += used;
			if (rc != KT_HTTP_AGAIN)
				break;
			if (!feeder_more(&f)) {
				rc = kt_http_body_eof(&b);
				break;
			}
		}
		if (rc == KT_HTTP_ERROR) {
			if (append(out, refusal(b.status, b.reason, pos)))
				goto fail;
			break;
		}
		if (append(out, message_dict(&m, data + start, &b, start,
					     pos - start)))
			goto fail;
		start = pos;
		if (m.framing == KT_HTTP_FR_TUNNEL ||
		    m.framing == KT_HTTP_FR_CLOSE)
			break;
	}
	PyMem_Free(f.cuts);
	PyMem_Free(fields);
	PyMem_Free(obuf);
	return out;
fail:
	PyMem_Free(f.cuts);
	PyMem_Free(fields);
	PyMem_Free(obuf);
	Py_XDECREF(out);
	return NULL;
}

static int get_opts(struct opts *o, PyObject *kwargs_lim[4], int merge,
		    int response, const char *meth, Py_ssize_t meth_len)
{
	unsigned long v[4];
	int i;

	kt_http_limits_init(&o->lim);
	v[0] = o->lim.request_line;
	v[1] = o->lim.header_line;
	v[2] = o->lim.fields;
	v[3] = o->lim.head;
	for (i = 0; i < 4; i++) {
		if (!kwargs_lim[i] || kwargs_lim[i] == Py_None)
			continue;
		v[i] = PyLong_AsUnsignedLong(kwargs_lim[i]);
		if (v[i] == (unsigned long)-1 && PyErr_Occurred())
			return -1;
		if (v[i] > 0x7fffffffUL) {
			PyErr_SetString(PyExc_ValueError, "limit too large");
			return -1;
		}
	}
	o->lim.request_line = v[0];
	o->lim.header_line = v[1];
	o->lim.fields = v[2];
	o->lim.head = v[3];
	o->lim.flags = merge ? KT_HTTP_F_MERGE_SLASHES : 0;
	o->response = response;
	o->req_method = meth ? method_id(meth, meth_len) : KT_HTTP_M_GET;
	return 0;
}

static PyObject *py_parse(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {
		"data", "response", "split", "request_method", "request_line",
		"header_line", "fields", "head", "merge_slashes",
		"skip_opaque", NULL,
	};
	Py_buffer data;
	PyObject *split = NULL, *lims[4] = { NULL, NULL, NULL, NULL };
	const char *meth = NULL;
	Py_ssize_t meth_len = 0;
	int response = 0, merge = 1, skip = 0;
	struct opts o;
	PyObject *res;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|$pOz#OOOOpp", kwlist,
					 &data, &response, &split, &meth,
					 &meth_len, &lims[0], &lims[1],
					 &lims[2], &lims[3], &merge, &skip))
		return NULL;
	if (get_opts(&o, lims, merge, response, meth, meth_len)) {
		PyBuffer_Release(&data);
		return NULL;
	}
	o.skip_opaque = skip;
	res = parse_all(data.buf, data.len, &o, split);
	PyBuffer_Release(&data);
	return res;
}

/*
 * lookup(data, name, cookie=False): parse the first request head of data
 * and return the values of every field named `name` (kt_http_find_field),
 * or with cookie=True the value of cookie `name` (kt_http_cookie) or None.
 */
static PyObject *py_lookup(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "data", "name", "cookie", NULL };
	static struct kt_http_field fields[KT_HTTP_DEF_FIELDS];
	static u8 obuf[KT_HTTP_DEF_REQUEST_LINE + KT_HTTP_HOST_MAX + 16];
	const char *data, *name;
	Py_ssize_t dlen, nlen;
	struct kt_http_msg m;
	int cookie = 0, rc, i;
	PyObject *l, *v;
	u32 off, len;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "y#y#|p", kwlist, &data,
					 &dlen, &name, &nlen, &cookie))
		return NULL;
	kt_http_req_init(&m, NULL, fields, KT_HTTP_DEF_FIELDS, obuf,
			 sizeof(obuf));
	rc = kt_http_parse(&m, (const u8 *)data, dlen);
	if (rc != KT_HTTP_DONE) {
		PyErr_Format(PyExc_ValueError, "request not accepted: %s",
			     rc == KT_HTTP_ERROR ? m.reason : "incomplete head");
		return NULL;
	}
	if (cookie) {
		if (!kt_http_cookie(&m, (const u8 *)data, name, nlen, &off,
				    &len))
			Py_RETURN_NONE;
		return bytes_at((const u8 *)data, off, len);
	}
	l = PyList_New(0);
	if (!l)
		return NULL;
	i = -1;
	while ((i = kt_http_find_field(&m, (const u8 *)data, name, nlen,
				       i + 1)) >= 0) {
		v = bytes_at((const u8 *)data, m.fields[i].value_off,
			     m.fields[i].value_len);
		if (append(l, v)) {
			Py_DECREF(l);
			return NULL;
		}
	}
	return l;
}

/*
 * auth_per_connection(value): whether a WWW-Authenticate or
 * Proxy-Authenticate field's value offers NTLM or Negotiate, the schemes
 * that make the switch keep a backend connection for its client
 * (kt_http_auth_per_connection).
 */
static PyObject *py_auth_per_connection(PyObject *self, PyObject *args)
{
	const char *v;
	Py_ssize_t n;

	if (!PyArg_ParseTuple(args, "y#", &v, &n))
		return NULL;
	return PyBool_FromLong(kt_http_auth_per_connection((const u8 *)v, n));
}

static PyMethodDef methods[] = {
	{ "parse", (PyCFunction)(void (*)(void))py_parse,
	  METH_VARARGS | METH_KEYWORDS,
	  "parse(data, *, response=False, split=None, request_method=None, "
	  "request_line=None, header_line=None, fields=None, head=None, "
	  "merge_slashes=True, skip_opaque=False) -> list of dicts, one per "
	  "message" },
	{ "lookup", (PyCFunction)(void (*)(void))py_lookup,
	  METH_VARARGS | METH_KEYWORDS,
	  "lookup(data, name, cookie=False) -> list of field values, or the "
	  "cookie's value (None if absent)" },
	{ "auth_per_connection", py_auth_per_connection, METH_VARARGS,
	  "auth_per_connection(value) -> whether a WWW-Authenticate value "
	  "offers NTLM or Negotiate" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "l7ctl._http",
	"The ktcpvs HTTP parser (kmod/core/http.c).", -1, methods,
	NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__http(void)
{
	PyObject *mod = PyModule_Create(&module);

	if (!mod)
		return NULL;
	if (PyModule_AddIntConstant(mod, "DEF_REQUEST_LINE",
				    KT_HTTP_DEF_REQUEST_LINE) ||
	    PyModule_AddIntConstant(mod, "DEF_HEADER_LINE",
				    KT_HTTP_DEF_HEADER_LINE) ||
	    PyModule_AddIntConstant(mod, "DEF_FIELDS", KT_HTTP_DEF_FIELDS) ||
	    PyModule_AddIntConstant(mod, "DEF_HEAD", KT_HTTP_DEF_HEAD)) {
		Py_DECREF(mod);
		return NULL;
	}
	return mod;
}
