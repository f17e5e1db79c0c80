// SPDX-License-Identifier: GPL-2.0
/*
 * kt_relay.c - moving the bytes of one direction: buffered bytes are sent
 * as they are classified, opaque body bytes pass zero-copy through the
 * direction's pipe.  The same helpers serve both directions: up (client ->
 * backend) and down (backend -> client); what a result means for the
 * exchange (a client gone, a server gone, a bad body) is decided by the
 * request and response steps.  The connection's work or tasklet: the
 * socket calls lock their socket the way the context allows (kt_sock_call,
 * kt_io.c).
 */

#include <linux/skbuff.h>
#include <net/sock.h>
#include <net/tcp.h>

#include "kt_conn.h"

/* ---- the pipe: zero-copy relay ---------------------------------------------- */

struct kt_pipe_cb {
	u32 off, len;			/* the part of the skb still to send */
};

#define KT_PIPE_CB(skb)	((struct kt_pipe_cb *)(skb)->cb)

void kt_pipe_init(struct kt_pipe *p)
{
	__skb_queue_head_init(&p->q);
	p->bytes = 0;
}

void kt_pipe_purge(struct kt_pipe *p)
{
	struct sk_buff *skb;

	while ((skb = __skb_dequeue(&p->q))) {
		consume_skb(skb);
		kt_alloc_dec();
	}
	p->bytes = 0;
}

/*
 * For a tcp_read_sock() actor: take @len bytes of @skb at @off into @p, by
 * a clone, not a copy.  The bytes taken, or 0 when @p is full or the clone
 * cannot be had (*@error: -ENOMEM, or -EAGAIN in softirq, where a clone
 * that would need to sleep is left to the work item).  Under the source's
 * socket lock.
 */
size_t kt_pipe_take(struct kt_pipe *p, struct sk_buff *skb, unsigned int off,
		    size_t len, int *error)
{
	struct sk_buff *clone;

	if (!len || skb_queue_len(&p->q) >= KT_PIPE_SKBS)
		return 0;
	clone = skb_clone(skb, in_task() ? GFP_KERNEL : GFP_NOWAIT | __GFP_NOWARN);
	if (!clone) {
		*error = in_task() ? -ENOMEM : -EAGAIN;
		return 0;
	}
	kt_alloc_inc();
	KT_PIPE_CB(clone)->off = off;
	KT_PIPE_CB(clone)->len = len;
	__skb_queue_tail(&p->q, clone);
	p->bytes += len;
	return len;
}

/* tcp_read_sock() actor of kt_pipe_fill(): desc->count bounds the bytes. */
static int kt_pipe_actor(read_descriptor_t *desc, struct sk_buff *skb,
			 unsigned int off, size_t len)
{
	size_t n = kt_pipe_take(desc->arg.data, skb, off,
				min_t(size_t, len, desc->count), &desc->error);

	desc->count -= n;
	return n;
}

static int kt_pipe_fill_locked(struct sock *sk, void *arg)
{
	read_descriptor_t *desc = arg;

	return kt_read_result(sk, tcp_read_sock(sk, desc, kt_pipe_actor),
			      desc->error);
}

/*
 * Take up to @max bytes off @from's receive queue into @p, without copying.
 * Bytes taken (> 0), 0 at the end of the stream, -EAGAIN, or -errno.  The
 * socket lock of @from only: never two socket locks at once.
 */
int kt_pipe_fill(struct kt_pipe *p, struct socket *from, u64 max)
{
	read_descriptor_t desc = { .arg.data = p };

	desc.count = min_t(u64, max, KT_PIPE_BYTES - p->bytes);
	return kt_sock_call(from->sk, kt_pipe_fill_locked, &desc);
}

/* @n bytes of @skb, the first of @p, were sent: drop them, and the skb once all are. */
static void kt_pipe_sent(struct kt_pipe *p, struct sk_buff *skb, int n)
{
	struct kt_pipe_cb *cb = KT_PIPE_CB(skb);

	cb->off += n;
	cb->len -= n;
	p->bytes -= n;
	if (!cb->len) {
		__skb_unlink(skb, &p->q);
		consume_skb(skb);
		kt_alloc_dec();
	}
}

static int kt_pipe_flush_locked(struct sock *sk, void *arg)
{
	struct kt_pipe *p = arg;
	struct kt_tx_save save;
	struct sk_buff *skb;
	int sent = 0, n = -EAGAIN;

	kt_tx_begin(sk, &save);
	while ((skb = skb_peek(&p->q))) {
		struct kt_pipe_cb *cb = KT_PIPE_CB(skb);

		n = skb_send_sock_locked(sk, skb, cb->off, cb->len);
		if (n <= 0)
			break;
		sent += n;
		kt_pipe_sent(p, skb, n);
	}
	kt_tx_end(sk, &save, sent ? 0 : n);
	if (sent)
		return sent;
	return n < 0 ? n : -EAGAIN;
}

/* Send what @p holds on @to.  Bytes sent (> 0), -EAGAIN, or -errno. */
int kt_pipe_flush(struct kt_pipe *p, struct socket *to)
{
	return kt_sock_call(to->sk, kt_pipe_flush_locked, p);
}

/*
 * Send the contiguous bytes of @skb at @off (at most @len) to the TLS
 * socket @to, through TLS's sendmsg: a page fragment's bytes by reference
 * (TLS takes its own reference on the page and encrypts from it), the
 * head's bytes and a page TLS cannot take by copy.  Bytes sent (> 0),
 * -EAGAIN, or -errno.
 */
static int kt_skb_send_tls(struct socket *to, struct sk_buff *skb, u32 off,
			   u32 len, bool more)
{
	int flags = MSG_DONTWAIT | MSG_NOSIGNAL;
	struct sk_buff *list = NULL;
	struct msghdr msg = { };
	struct kvec kv;
	u32 part;
	int i;

again:
	if (off < skb_headlen(skb)) {
		part = min(len, skb_headlen(skb) - off);
		kv.iov_base = skb->data + off;
		goto copy;
	}
	off -= skb_headlen(skb);
	for (i = 0; i < skb_shinfo(skb)->nr_frags; i++) {
		const skb_frag_t *f = &skb_shinfo(skb)->frags[i];

		if (off >= skb_frag_size(f)) {
			off -= skb_frag_size(f);
			continue;
		}
		part = min(len, skb_frag_size(f) - off);
		if (more || part < len)
			flags |= MSG_MORE;
		if (sendpage_ok(skb_frag_page(f)))
			return kt_send_page(to, skb_frag_page(f),
					    skb_frag_off(f) + off, part, flags);
		kv.iov_base = skb_frag_address(f) + off;
		goto copy;
	}
	/* the frag list: one level deep, as the network stack builds it */
	if (!list) {
		skb_walk_frags(skb, list) {
			if (off < list->len && !skb_has_frag_list(list)) {
				skb = list;
				goto again;
			}
			off -= list->len;
		}
	}
	WARN_ON_ONCE(1);	/* bytes the pipe counted but cannot find */
	return -EIO;
copy:
	if (more || part < len)
		flags |= MSG_MORE;
	kv.iov_len = part;
	msg.msg_flags = flags;
	return kernel_sendmsg(to, &msg, &kv, 1, part);
}

/*
 * Send what @p holds on the TLS socket @to (the client of a TLS
 * connection).  Not skb_send_sock_locked(): under the TCP socket's lock it
 * would put the skbs on the wire around TLS.  Every piece but the pipe's
 * last says MSG_MORE, so TLS fills whole records.  Process context: TLS
 * takes its own locks (a TLS connection's steps run in its work only).
 * Bytes sent (> 0), -EAGAIN, or -errno.
 */
int kt_pipe_flush_tls(struct kt_pipe *p, struct socket *to)
{
	struct sk_buff *skb;
	int sent = 0, n = -EAGAIN;

	if (WARN_ON_ONCE(!in_task()))
		return -EAGAIN;
	while ((skb = skb_peek(&p->q))) {
		struct kt_pipe_cb *cb = KT_PIPE_CB(skb);

		n = kt_skb_send_tls(to, skb, cb->off, cb->len,
				    p->bytes > cb->len);
		if (n <= 0)
			break;
		sent += n;
		kt_pipe_sent(p, skb, n);
	}
	if (sent)
		return sent;
	return n < 0 ? n : -EAGAIN;
}

/* ---- one direction ---------------------------------------------------------- */

/* Count @n bytes that went to @d's destination (@spliced: from the pipe). */
static void kt_dir_sent(struct kt_conn *c, struct kt_dir *d, int n,
			bool spliced)
{
	struct kt_stats *svc = c->svc ? c->svc->st : c->svc_st;

	if (d == &c->up) {
		kt_stat_add(c->srv->st, bytes_in, n);
		kt_stat_add(c->pool->st, bytes_in, n);
	} else {
		c->resp_started = true;
		c->rq_out += n;
		kt_stat_add(svc, bytes_out, n);
		if (c->srv) {
			kt_stat_add(c->srv->st, bytes_out, n);
			kt_stat_add(c->pool->st, bytes_out, n);
		}
	}
	if (spliced) {
		kt_stat_add(svc, spliced, n);
		if (c->srv) {
			kt_stat_add(c->srv->st, spliced, n);
			kt_stat_add(c->pool->st, spliced, n);
		}
	}
}

/* Count @n bytes read from @d's source. */
static void kt_dir_read_count(struct kt_conn *c, struct kt_dir *d, int n)
{
	if (d == &c->up) {
		c->rq_in += n;
		kt_stat_add(c->svc ? c->svc->st : c->svc_st, bytes_in, n);
	}
}

static enum kt_io kt_io_of(int n)
{
	if (n > 0)
		return KT_IO_MOVED;
	if (!n)
		return KT_IO_SRC_EOF;
	return n == -EAGAIN ? KT_IO_AGAIN : KT_IO_SRC_ERR;
}

/*
 * Send buf[sent, fwd) to @d's destination; once it is all sent, drop it
 * (unless the request is held for a retry).  @more: the message's next
 * bytes follow at once.
 */
static enum kt_io __kt_dir_send(struct kt_conn *c, struct kt_dir *d, bool more)
{
	struct socket *dst = kt_dir_dst(c, d);
	int n;

	if (WARN_ON_ONCE(!dst || d->fwd <= d->sent))
		return KT_IO_DST_ERR;
	n = kt_send(dst, d->buf + d->sent, d->fwd - d->sent, more);
	if (n == -EAGAIN)
		return KT_IO_AGAIN;
	if (n < 0)
		return KT_IO_DST_ERR;
	kt_dir_sent(c, d, n, false);
	d->sent += n;
	if (d->sent == d->fwd && !(d == &c->up && c->hold))
		kt_buf_drop_sent(d);
	return KT_IO_MOVED;
}

enum kt_io kt_dir_send(struct kt_conn *c, struct kt_dir *d)
{
	/* the head of a request whose body bytes wait in the buffer */
	bool more = d == &c->up && c->rq == KT_RQ_SEND && !d->body_done &&
		    d->len > d->fwd;

	return __kt_dir_send(c, d, more);
}

/* Send the pipe's skbs to @d's destination. */
static enum kt_io kt_dir_splice(struct kt_conn *c, struct kt_dir *d)
{
	struct socket *dst = kt_dir_dst(c, d);
	int n;

	if (WARN_ON_ONCE(!dst))
		return KT_IO_DST_ERR;
	if (c->tls && d == &c->down)
		n = kt_pipe_flush_tls(&d->pipe, dst);
	else
		n = kt_pipe_flush(&d->pipe, dst);
	if (n == -EAGAIN)
		return KT_IO_AGAIN;
	if (n < 0)
		return KT_IO_DST_ERR;
	kt_dir_sent(c, d, n, true);
	return KT_IO_MOVED;
}

/* Classify the buffered bytes after fwd with the body machine. */
static enum kt_io kt_dir_feed(struct kt_dir *d)
{
	size_t used;
	int r;

	r = kt_http_body_feed(&d->ms->body, d->buf + d->fwd, d->len - d->fwd,
			      &used);
	if (r == KT_HTTP_ERROR)
		return KT_IO_BAD;
	d->fwd += used;
	d->body_done = r == KT_HTTP_DONE;
	return KT_IO_MOVED;
}

/*
 * A TLS client's socket holds ciphertext: what it sends is read through
 * TLS's recvmsg into the buffer (a copy: TLS decrypts into it).  Towards
 * it, the pipe's pages go to TLS's sendmsg by reference (kt_pipe_flush_tls),
 * which encrypts from them: zero-copy as between plain sockets.
 */
static bool kt_dir_zero_copy(const struct kt_conn *c, const struct kt_dir *d)
{
	return !c->tls || d == &c->down;
}

/*
 * Read what comes next of the body from @d's source, only when something
 * waits there: opaque bytes (the body machine may skip them) into the pipe,
 * framing bytes into the buffer -- a little at a time while chunks are
 * large, so that their data is spliced.
 */
static enum kt_io kt_dir_read(struct kt_conn *c, struct kt_dir *d)
{
	struct socket *src = kt_dir_src(c, d);
	u64 op = kt_http_body_opaque(&d->ms->body);
	u32 room;
	int n;

	if (WARN_ON_ONCE(!src))
		return KT_IO_SRC_ERR;
	if (!kt_sk_readable(src->sk))
		return KT_IO_AGAIN;
	if (op && kt_dir_zero_copy(c, d)) {
		n = kt_pipe_fill(&d->pipe, src, op);
		if (n <= 0)
			return kt_io_of(n);
		d->big = n >= 16 * KT_FRAMING_READ;
		d->body_done = kt_http_body_skip(&d->ms->body, n) ==
			       KT_HTTP_DONE;
		kt_dir_read_count(c, d, n);
		return KT_IO_MOVED;
	}
	if (kt_buf_get(d))
		return KT_IO_SRC_ERR;
	room = d->cap - d->len;
	if (WARN_ON_ONCE(!room))
		return KT_IO_SRC_ERR;
	n = kt_recv(src, d->buf + d->len,
		    d->big ? min_t(u32, room, KT_FRAMING_READ) : room);
	if (n <= 0)
		return kt_io_of(n);
	d->len += n;
	kt_dir_read_count(c, d, n);
	return KT_IO_MOVED;
}

/*
 * One step of a message's body: send what is classified, splice what the
 * pipe holds, classify what is buffered, or read more.  KT_IO_DONE once the
 * whole body is classified and sent.
 */
enum kt_io kt_dir_step(struct kt_conn *c, struct kt_dir *d)
{
	/* body bytes the pipe took with the head follow it at once */
	if (d->fwd > d->sent)
		return __kt_dir_send(c, d, d->pipe.bytes != 0);
	if (d->pipe.bytes)
		return kt_dir_splice(c, d);
	if (d->body_done)
		return KT_IO_DONE;
	if (d->len > d->fwd)
		return kt_dir_feed(d);
	return kt_dir_read(c, d);
}

/*
 * One step of a tunnel direction (after 101, or 2xx to CONNECT): every
 * byte passes as it comes, until the source closes (KT_IO_SRC_EOF).
 */
enum kt_io kt_dir_tunnel(struct kt_conn *c, struct kt_dir *d)
{
	struct socket *src = kt_dir_src(c, d);
	int n;

	if (d->fwd > d->sent)
		return __kt_dir_send(c, d, false);
	if (d->pipe.bytes)
		return kt_dir_splice(c, d);
	if (d->len > d->fwd) {
		d->fwd = d->len;
		return KT_IO_MOVED;
	}
	/*
	 * What was read before the tunnel began is out: a spliced direction
	 * needs no buffer again, and a quiet tunnel holds none.
	 */
	if (d->buf && kt_dir_zero_copy(c, d))
		kt_buf_put(d);
	if (!kt_sk_readable(src->sk))
		return KT_IO_AGAIN;
	if (!kt_dir_zero_copy(c, d)) {
		if (kt_buf_get(d) || WARN_ON_ONCE(d->len >= d->cap))
			return KT_IO_SRC_ERR;
		n = kt_recv(src, d->buf + d->len, d->cap - d->len);
		if (n > 0)
			d->len += n;
	} else {
		n = kt_pipe_fill(&d->pipe, src, KT_HTTP_OPAQUE_ALL);
	}
	if (n > 0)
		kt_dir_read_count(c, d, n);
	return kt_io_of(n);
}

/* A new message starts in @d; the buffer keeps what it holds. */
void kt_dir_reset(struct kt_dir *d)
{
	d->body_done = false;
	d->big = false;
}
