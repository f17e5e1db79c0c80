// SPDX-License-Identifier: GPL-2.0
/*
 * kt_answer.c - answers of the switch itself, and the lingering close that
 * follows them.  Process context: the connection's work, or the accept
 * work for refusals (kt_refuse).
 */

#include <linux/net.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "kt_conn.h"

static const char *kt_status_text(unsigned int status)
{
	switch (status) {
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 303: return "See Other";
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
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 451: return "Unavailable For Legal Reasons";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return status < 400 ? "Redirect" : "Error";
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
 * Answer the client ourselves and close: a small well-formed response with
 * Connection: close.  Once response bytes of a backend went out, the only
 * honest thing left is to cut the connection.
 */
void kt_conn_answer(struct kt_conn *c, unsigned int status,
		    const char *reason, const u8 *location, u32 location_len)
{
	const char *text = kt_status_text(status);
	size_t cap;
	int n;

	kt_conn_drop_exchange(c, false);
	if (c->resp_started || (c->svc && (c->svc->flags & KT_SERVICE_RAW))) {
		kt_conn_close(c);
		return;
	}
	kt_alog_status(c, status);
	cap = 256 + strlen(text) + 2 * strlen(reason) + location_len;
	c->ebuf = kmalloc(cap, KT_GFP);
	if (!c->ebuf) {
		kt_conn_close(c);
		return;
	}
	kt_alloc_inc();
	n = scnprintf(c->ebuf, cap,
		      "HTTP/1.1 %u %s\r\nServer: ktcpvs\r\n"
		      "Content-Type: text/plain\r\nContent-Length: %zu\r\n"
		      "%s%.*s%s%sConnection: close\r\n\r\n%s\n",
		      status, text, strlen(reason) + 1,
		      location ? "Location: " : "", (int)location_len,
		      location ? (const char *)location : "",
		      location ? "\r\n" : "",
		      status == 429 ? "Retry-After: 1\r\n" : "", reason);
	c->elen = n;
	c->esent = 0;
	c->cs = KT_CS_ANSWER;
	c->deadline = jiffies + KT_LINGER;
}

void kt_conn_fail(struct kt_conn *c, int kind, unsigned int status,
		  const char *reason)
{
	kt_conn_count_error(c, kind);
	kt_conn_answer(c, status, reason, NULL, 0);
}

/*
 * Close the client connection after the last response: its buffers go
 * first, then the write side is shut and the read side drained for a
 * moment, so the client reads the answer instead of a reset.
 */
void kt_conn_linger(struct kt_conn *c)
{
	/* an answer of the switch went out, or a tunnel ended */
	kt_alog_done(c, kt_alog_end_or(c, KTCPVS_END_NORMAL));
	kt_conn_drop_exchange(c, true);
	kernel_sock_shutdown(c->csk, SHUT_WR);
	c->cs = KT_CS_LINGER;
	c->deadline = jiffies + KT_LINGER;
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
