/* SPDX-License-Identifier: GPL-2.0 */
/*
 * http.h - strict, incremental HTTP/1.x parser (RFC 9112 / RFC 9110).
 *
 * One source, three builds: ktcpvs.ko (#include "core/http.c"), the l7ctl
 * Python extension (l7ctl._http) and the libFuzzer harnesses in tests/fuzz.
 * Nothing here allocates, recurses, uses floating point or mutable globals.
 *
 * Model
 * -----
 * A message is parsed in two phases.
 *
 * 1. The head (start line + header fields + empty line).  The caller keeps
 *    the head bytes received so far in ONE contiguous buffer that starts at
 *    the first byte of the message, and calls kt_http_parse() with the whole
 *    buffer each time more bytes arrived.  The parser resumes where it
 *    stopped (it never rescans: O(n) over the head however it is split) and
 *    records everything as offsets into that buffer, so the buffer must not
 *    change between calls (it may move: only offsets are kept).  The parser
 *    never writes to the buffer.  kt_http_parse() returns
 *	KT_HTTP_AGAIN	need more bytes (nothing more to do with these),
 *	KT_HTTP_DONE	head complete: m->head_len bytes are the head, the
 *			rest of the buffer belongs to the body/next message,
 *	KT_HTTP_ERROR	refused: m->status (400, 414, 431, 501, 505; 502 for
 *			every response refusal), m->reason (static string),
 *			m->err_off (offset of the offending byte).
 *    Limits (struct kt_http_limits) bound every line, the field count and
 *    the whole head, so the buffer never needs more than limits.max_head.
 *
 * 2. The body, by a separate streaming machine (struct kt_http_body) that
 *    does not buffer: kt_http_body_feed() is given whatever bytes arrived and
 *    says how many of them belong to the current message, so a relay can
 *    forward them as they pass (Content-Length countdown; chunked: size line,
 *    extensions, data, CRLF, trailer section; close-delimited for
 *    responses).
 *
 * Results a switch routes on (valid after KT_HTTP_DONE): method and its
 * enum, version, request target, normalized path (written to the caller's
 * output buffer), query, host (lower-cased, port stripped, written to the
 * same output buffer; the absolute-form target's host wins over Host),
 * header fields by name, cookies by name, keep-alive, framing, content
 * length, upgrade requested.  See docs/http.md for the exact rules.
 */
#ifndef KT_HTTP_H
#define KT_HTTP_H

#include "kt_compat.h"

/* Return values of kt_http_parse() and kt_http_body_feed(). */
#define KT_HTTP_AGAIN		0
#define KT_HTTP_DONE		1
#define KT_HTTP_ERROR		(-1)

/* Default limits. */
#define KT_HTTP_DEF_REQUEST_LINE	8192
#define KT_HTTP_DEF_HEADER_LINE		8192
#define KT_HTTP_DEF_FIELDS		100
#define KT_HTTP_DEF_HEAD		65536
/* Longest host name (RFC 1035 and friends); longer is refused with 400. */
#define KT_HTTP_HOST_MAX		255
/* Largest Content-Length / chunk size accepted (2^62 - 1). */
#define KT_HTTP_LENGTH_MAX		0x3fffffffffffffffULL

struct kt_http_limits {
	u32 request_line;	/* request/status line, without CRLF: 414 */
	u32 header_line;	/* one field line, without CRLF: 431 */
	u32 fields;		/* number of header fields: 431 */
	u32 head;		/* whole head including every CRLF: 431 */
	u32 flags;		/* KT_HTTP_F_* */
};

/* Merge runs of '/' in the normalized path (default on, like nginx). */
#define KT_HTTP_F_MERGE_SLASHES	0x1

enum kt_http_method {
	KT_HTTP_M_OTHER = 0,	/* an extension method: see method_off/len */
	KT_HTTP_M_GET,
	KT_HTTP_M_HEAD,
	KT_HTTP_M_POST,
	KT_HTTP_M_PUT,
	KT_HTTP_M_DELETE,
	KT_HTTP_M_CONNECT,
	KT_HTTP_M_OPTIONS,
	KT_HTTP_M_TRACE,
	KT_HTTP_M_PATCH,
};

enum kt_http_framing {
	KT_HTTP_FR_NONE = 0,	/* no body */
	KT_HTTP_FR_LENGTH,	/* Content-Length bytes */
	KT_HTTP_FR_CHUNKED,	/* chunked transfer coding */
	KT_HTTP_FR_CLOSE,	/* response: body runs until the server closes */
	KT_HTTP_FR_TUNNEL,	/* response: 101 or 2xx to CONNECT, not HTTP after */
};

enum kt_http_form {
	KT_HTTP_T_ORIGIN = 0,	/* /path?query */
	KT_HTTP_T_ABSOLUTE,	/* http://host/path?query */
	KT_HTTP_T_AUTHORITY,	/* host:port (CONNECT) */
	KT_HTTP_T_ASTERISK,	/* * (OPTIONS) */
};

/* One header field: offsets into the head buffer; value without OWS. */
struct kt_http_field {
	u32 name_off;
	u32 name_len;
	u32 value_off;
	u32 value_len;
};

/* Message flags (m->flags). */
#define KT_HTTP_KEEP_ALIVE	0x0001	/* connection persists after it */
#define KT_HTTP_UPGRADE		0x0002	/* Upgrade + Connection: upgrade */
#define KT_HTTP_HAS_HOST	0x0004	/* a host is known (host_len may be 0) */
#define KT_HTTP_HAS_QUERY	0x0008	/* the target has '?' */
#define KT_HTTP_CONN_CLOSE	0x0010	/* Connection: close */
#define KT_HTTP_CONN_KA		0x0020	/* Connection: keep-alive */
#define KT_HTTP_CONN_UPGRADE	0x0040	/* Connection: upgrade */
#define KT_HTTP_HAS_UPGRADE	0x0080	/* an Upgrade field */
#define KT_HTTP_HAS_CL		0x0100	/* a Content-Length field */
#define KT_HTTP_HAS_TE		0x0200	/* a Transfer-Encoding field */
#define KT_HTTP_TE_CHUNKED	0x0400	/* ... ending in chunked */
#define KT_HTTP_RESPONSE	0x8000	/* this is a response parser */

struct kt_http_msg {
	/* ---- results (valid after KT_HTTP_DONE) ---- */
	u32 head_len;		/* bytes of the head, final CRLF included */
	u32 flags;		/* KT_HTTP_* above */
	u8 version;		/* 10 or 11 */
	u8 method;		/* enum kt_http_method (request) */
	u8 form;		/* enum kt_http_form (request) */
	u8 framing;		/* enum kt_http_framing */
	u16 status;		/* response status code; refusal status */
	u16 req_method;		/* response: method of the request answered */
	u64 content_length;	/* with KT_HTTP_FR_LENGTH */

	u32 start_off;		/* first byte of the start line (after CRLFs) */
	u32 method_off, method_len;	/* request */
	u32 target_off, target_len;	/* request */
	u32 query_off, query_len;	/* request, with KT_HTTP_HAS_QUERY */
	u32 reason_off, reason_len;	/* response reason phrase */
	u32 path_off, path_len;		/* normalized path, in out[] */
	u32 host_off, host_len;		/* lower-cased host, in out[] */

	struct kt_http_field *fields;	/* caller's array, nfields used */
	u32 nfields;
	u32 fields_cap;

	u8 *out;		/* caller's buffer for path and host */
	u32 out_cap;
	u32 out_len;

	/* ---- refusal (after KT_HTTP_ERROR) ---- */
	const char *reason;	/* short static string */
	u32 err_off;		/* offset of the offending byte */

	/* ---- private parser state ---- */
	struct kt_http_limits lim;
	u32 pos;		/* next byte to look at */
	u32 line_start;		/* first byte of the current line */
	u32 tok;		/* start of the current token */
	u32 tok2;		/* end of field name / target flags */
	u32 val;		/* start of the field value */
	u32 end_lim;		/* first offset beyond the current line limit */
	u32 nf_seen;		/* header fields seen */
	u8 state;
	u8 resp_code_len;
};

/* Body framing state machine. */
struct kt_http_body {
	u64 remaining;		/* bytes left: Content-Length or current chunk */
	u64 decoded;		/* body bytes so far (chunked: decoded size) */
	u64 wire;		/* bytes fed that belonged to the body */
	u32 line_len;		/* bytes of the current chunk or trailer line */
	u32 section_len;	/* bytes of the trailer section */
	u32 ntrailers;		/* trailer fields seen */
	u32 max_line, max_fields, max_section;
	u8 framing;
	u8 state;
	u8 response;
	u8 ndigits;
	u16 status;		/* refusal status */
	const char *reason;	/* refusal reason */
};

/* Fill in the defaults. */
void kt_http_limits_init(struct kt_http_limits *l);

/*
 * Start parsing a request.  @lim may be NULL (defaults).  @fields/@cap:
 * caller's array for header fields (may be NULL: fields are then not
 * recorded and lookups find nothing; when given, at most
 * min(lim->fields, cap) fields are accepted).  @out/@out_cap: buffer for
 * the normalized path and the lower-cased host; out_cap >= request_line +
 * KT_HTTP_HOST_MAX + 1 is always enough, a smaller one may refuse long
 * targets with 414.
 */
void kt_http_req_init(struct kt_http_msg *m, const struct kt_http_limits *lim,
		      struct kt_http_field *fields, u32 cap,
		      u8 *out, u32 out_cap);

/*
 * Start parsing a response to a request with method @req_method (enum
 * kt_http_method: HEAD and CONNECT change the framing).
 */
void kt_http_resp_init(struct kt_http_msg *m, const struct kt_http_limits *lim,
		       struct kt_http_field *fields, u32 cap,
		       unsigned int req_method);

/*
 * Parse the head in buf[0..len).  @buf holds the message from its first
 * byte; @len only grows between calls.  Returns KT_HTTP_AGAIN, KT_HTTP_DONE
 * or KT_HTTP_ERROR (see above).  After DONE or ERROR, further calls return
 * the same result.
 */
int kt_http_parse(struct kt_http_msg *m, const u8 *buf, size_t len);

/* True while only empty lines (CRLF) preceding a message have been seen. */
bool kt_http_idle(const struct kt_http_msg *m);

/*
 * Index of the first field at or after @from whose name equals @name
 * (case-insensitive), or -1.
 */
int kt_http_find_field(const struct kt_http_msg *m, const u8 *buf,
		       const char *name, u32 name_len, u32 from);

/*
 * Look up cookie @name in every Cookie field.  On success stores the
 * value's offset/length in @buf (quotes kept) and returns true.
 */
bool kt_http_cookie(const struct kt_http_msg *m, const u8 *buf,
		    const char *name, u32 name_len, u32 *off, u32 *len);

/*
 * True if the challenges in a WWW-Authenticate or Proxy-Authenticate
 * field's value @v[0, @n) offer a scheme that authenticates the connection
 * rather than each request (NTLM, Negotiate).
 */
bool kt_http_auth_per_connection(const u8 *v, u32 n);

/* Body machine for message @m (after KT_HTTP_DONE). */
void kt_http_body_init(struct kt_http_body *b, const struct kt_http_msg *m);

/*
 * Feed @len body bytes.  *@used is set to the bytes that belong to this
 * message.  Returns KT_HTTP_DONE (message complete after *used bytes),
 * KT_HTTP_AGAIN (all @len bytes used, more needed) or KT_HTTP_ERROR
 * (*used = offset of the offending byte; b->status, b->reason).
 */
int kt_http_body_feed(struct kt_http_body *b, const u8 *data, size_t len,
		      size_t *used);

/*
 * Body bytes that may pass next without being looked at: the rest of a
 * Content-Length body or of the current chunk's data, KT_HTTP_OPAQUE_ALL
 * for a close-delimited body, 0 when framing bytes (or nothing) come next.
 * The data path relays such bytes without copying them.
 */
#define KT_HTTP_OPAQUE_ALL	((u64)-1)
u64 kt_http_body_opaque(const struct kt_http_body *b);

/*
 * Account for @n opaque bytes that passed (0 < @n <= kt_http_body_opaque()),
 * exactly as kt_http_body_feed() would have: KT_HTTP_DONE if they complete
 * the message, else KT_HTTP_AGAIN.  Any other @n is the caller's bug:
 * KT_HTTP_ERROR with status 500.
 */
int kt_http_body_skip(struct kt_http_body *b, u64 n);

/*
 * The peer closed: KT_HTTP_DONE if that ends the body (close-delimited or
 * already complete), otherwise KT_HTTP_ERROR ("incomplete body").
 */
int kt_http_body_eof(struct kt_http_body *b);

/* Static name of a method enum, or NULL for KT_HTTP_M_OTHER. */
const char *kt_http_method_name(unsigned int method);

#endif /* KT_HTTP_H */
