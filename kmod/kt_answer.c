// SPDX-License-Identifier: GPL-2.0
/*
 * kt_answer.c - answers of the switch itself, and the lingering close that
 * follows them.  The connection's work or tasklet (a shutdown is left to
 * the work), or the accept work for refusals (kt_refuse).
 */

#include <linux/net.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "kt_conn.h"

static const char *kt_status_text(unsigned int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 300: return "Multiple Choices";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
	case 304: return "Not Modified";
	case 307: return "Temporary Redirect";
	case 308: return "Permanent Redirect";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 410: return "Gone";
	case 414: return "URI Too Long";
	case 421: return "Misdirected Request";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return status < 300 ? "OK" : status < 400 ? "Redirect" : "Error";
	}
}

/*
 * The request is over for the switch: no backend, no buffers, no pipes.
 * The backend connection is kept for others only after a complete
 * exchange (@keep, and rs back to RS_IDLE).
 */
static void kt_conn_drop_exchange(struct kt_conn *c, bool keep)
{
	if (keep)
		kt_conn_drop_backend(c);
	else
		kt_conn_release_backend(c);
	c->rs = KT_RS_IDLE;
	kt_conn_end_request(c);
	c->hold = false;
	kt_pipe_purge(&c->up.pipe);
	kt_pipe_purge(&c->down.pipe);
	kt_buf_put(&c->up);
	kt_buf_put(&c->down);
}

/*
 * The head of an answer of the switch's own into @buf (@cap bytes, enough
 * for KT_ANSWER_HEAD plus @location_len): Content-Length @body_len (none
 * with 204 and 304), a Location if given, Connection: close if @close.
 */
#define KT_ANSWER_HEAD	256

static int kt_answer_head(char *buf, size_t cap, unsigned int status,
			  const char *type, u32 body_len, const u8 *location,
			  u32 location_len, bool close)
{
	int n = scnprintf(buf, cap, "HTTP/1.1 %u %s\r\nServer: ktcpvs\r\n",
			  status, kt_status_text(status));

	if (status != 204 && status != 304)
		n += scnprintf(buf + n, cap - n,
			       "Content-Type: %s\r\nContent-Length: %u\r\n",
			       type, body_len);
	if (location)
		n += scnprintf(buf + n, cap - n, "Location: %.*s\r\n",
			       (int)location_len, (const char *)location);
	if (status == 429)
		n += scnprintf(buf + n, cap - n, "Retry-After: 1\r\n");
	n += scnprintf(buf + n, cap - n, "%s\r\n",
		       close ? "Connection: close\r\n" : "");
	return n;
}

/* Whether an answer to the current request carries its body. */
static bool kt_answer_has_body(const struct kt_conn *c, unsigned int status)
{
	return status != 204 && status != 304 &&
	       c->req_method != KT_HTTP_M_HEAD;
}

/*
 * Send @skip.. of the answer @head + @body from c->ebuf, then close: the
 * bytes are copied, the exchange dropped (CS_ANSWER, kt_step_answer).
 */
static void kt_conn_answer_rest(struct kt_conn *c, unsigned int status,
				const char *head, u32 head_len, const u8 *body,
				u32 body_len, u32 skip)
{
	kt_conn_drop_exchange(c, false);
	if (c->resp_started || (c->svc && (c->svc->flags & KT_SERVICE_RAW))) {
		kt_conn_close(c);
		return;
	}
	kt_alog_status(c, status);
	c->ebuf = kmalloc(head_len + body_len, kt_gfp());
	if (!c->ebuf) {
		kt_conn_close(c);
		return;
	}
	kt_alloc_inc();
	memcpy(c->ebuf, head, head_len);
	if (body_len)
		memcpy(c->ebuf + head_len, body, body_len);
	c->elen = head_len + body_len;
	c->esent = min(skip, c->elen);
	c->cs = KT_CS_ANSWER;
	c->deadline = jiffies + KT_LINGER;
}

/*
 * Answer the client ourselves and close: a small well-formed response with
 * Connection: close.  Once response bytes of a backend went out, the only
 * honest thing left is to cut the connection.
 */
void kt_conn_answer(struct kt_conn *c, unsigned int status,
		    const char *reason, const u8 *location, u32 location_len)
{
	char line[96];
	u32 body_len = scnprintf(line, sizeof(line), "%s\n", reason);
	size_t cap = KT_ANSWER_HEAD + location_len;
	char *head = kmalloc(cap, kt_gfp());
	int n;

	if (!head) {
		kt_conn_drop_exchange(c, false);
		kt_conn_close(c);
		return;
	}
	n = kt_answer_head(head, cap, status, "text/plain", body_len, location,
			   location_len, true);
	kt_conn_answer_rest(c, status, head, n, line,
			    kt_answer_has_body(c, status) ? body_len : 0, 0);
	kfree(head);
}

/*
 * An answer rule: its status and body, served without any backend.  A
 * request without a body on a keep-alive connection is answered in place
 * and the connection stays for the next request, as for a backend's
 * answer; if the socket does not take the whole answer at once, the rest
 * goes from a copy and the connection closes after it.  A request with a
 * body is answered with Connection: close (its body is never read).
 */
void kt_conn_answer_rule(struct kt_conn *c, unsigned int status,
			 const u8 *body, u32 body_len)
{
	const char *type = "text/plain; charset=utf-8";
	bool ka = c->client_ka && c->up.ms->msg.framing == KT_HTTP_FR_NONE &&
		  !c->resp_started;
	u32 content = kt_answer_has_body(c, status) ? body_len : 0;
	char head[KT_ANSWER_HEAD];
	struct kvec iov[2];
	int hlen, n;

	kt_conn_count_error(c, KT_E_ANSWERED);
	hlen = kt_answer_head(head, sizeof(head), status, type, body_len,
			      NULL, 0, !ka);
	if (!ka) {
		kt_conn_answer_rest(c, status, head, hlen, body, content,
				    0);
		return;
	}
	iov[0] = (struct kvec){ .iov_base = head, .iov_len = hlen };
	iov[1] = (struct kvec){ .iov_base = (void *)body, .iov_len = content };
	kt_alog_status(c, status);
	n = kt_sendv(c->csk, iov, content ? 2 : 1, hlen + content, false);
	if (n == -EAGAIN)
		n = 0;
	if (n < 0) {
		kt_conn_drop_exchange(c, false);
		kt_conn_close(c);
		return;
	}
	kt_stat_add(c->svc->st, bytes_out, n);
	c->rq_out += n;
	if (n < hlen + content) {
		kt_conn_answer_rest(c, status, head, hlen, body, content,
				    n);
		return;
	}
	/* answered: the head leaves the buffer, a pipelined request stays */
	c->up.sent = c->up.ms->msg.head_len;
	kt_buf_drop_sent(&c->up);
	c->first = false;
	kt_conn_start_request(c);
	c->park_at = c->up.len ? 0 : jiffies + KT_PARK_DELAY;
}

void kt_conn_fail(struct kt_conn *c, int kind, unsigned int status,
		  const char *reason)
{
	kt_conn_count_error(c, kind);
	kt_conn_answer(c, status, reason, NULL, 0);
}

/*
 * Close the client connection after the last response: its buffers and
 * message states go first, then the write side is shut and the read side
 * drained for a moment, so the client reads the answer instead of a reset.
 */
void kt_conn_linger(struct kt_conn *c)
{
	/* an answer of the switch went out, or a tunnel ended */
	kt_alog_done(c, kt_alog_end_or(c, KTCPVS_END_NORMAL));
	kt_conn_drop_exchange(c, true);
	kt_conn_msgs_put(c);
	c->cs = KT_CS_LINGER;
	c->deadline = jiffies + KT_LINGER;
	c->shut_wr = true;		/* kt_step_linger, in process context */
}

enum kt_step kt_step_answer(struct kt_conn *c)
{
	int n = kt_send(c->csk, c->ebuf + c->esent, c->elen - c->esent, false);

	if (n == -EAGAIN)
		return KT_BLOCKED;
	if (n < 0) {
		kt_conn_close(c);
		return KT_PROGRESS;
	}
	kt_stat_add(c->svc_st, bytes_out, n);
	c->rq_out += n;
	c->esent += n;
	if (c->esent == c->elen) {
		kfree(c->ebuf);
		kt_alloc_dec();
		c->ebuf = NULL;
		kt_conn_linger(c);
	}
	return KT_PROGRESS;
}

enum kt_step kt_step_linger(struct kt_conn *c)
{
	u8 sink[256];
	int n;

	if (c->shut_wr) {
		if (!in_task()) {
			kt_io_defer();	/* a shutdown takes the socket lock */
			return KT_BLOCKED;
		}
		kt_sock_shutdown_wr(c->csk);
		c->shut_wr = false;
		return KT_PROGRESS;
	}
	if (!kt_sk_readable(c->csk->sk))
		return KT_BLOCKED;
	n = kt_recv(c->csk, sink, sizeof(sink));
	if (n == -EAGAIN)
		return KT_BLOCKED;
	if (n <= 0)
		kt_conn_close(c);
	return KT_PROGRESS;
}

/*
 * Refuse a connection as it is accepted, before anything is allocated for
 * it: a fixed answer if the socket takes it at once, then close.
 */
void kt_refuse(struct socket *sock, unsigned int status)
{
	static const char busy[] =
		"HTTP/1.1 503 Service Unavailable\r\nServer: ktcpvs\r\n"
		"Content-Type: text/plain\r\nContent-Length: 37\r\n"
		"Connection: close\r\n\r\ntoo many connections to this service\n";
	static const char slow_down[] =
		"HTTP/1.1 429 Too Many Requests\r\nServer: ktcpvs\r\n"
		"Content-Type: text/plain\r\nContent-Length: 39\r\n"
		"Retry-After: 1\r\nConnection: close\r\n\r\n"
		"too many connections from this address\n";
	const char *a = status == 429 ? slow_down : busy;

	kt_send(sock, a, strlen(a), false);
	kernel_sock_shutdown(sock, SHUT_WR);
	sock_release(sock);
}
