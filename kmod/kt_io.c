// SPDX-License-Identifier: GPL-2.0
/*
 * kt_io.c - socket callbacks, nonblocking socket calls, and the buffers of
 * a connection's two directions.
 */

#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <net/sock.h>
#include <net/tcp.h>

#include "kt_conn.h"

/* ---- socket callbacks ----------------------------------------------------- */

/*
 * Context: softirq, or process context from release_sock() of the socket's
 * owner.  Callbacks only queue work: sk_user_data is read under
 * sk_callback_lock, which kt_sk_set() takes for writing, so once a socket
 * is unhooked no callback can reach its old owner.
 */
void kt_sk_event(struct sock *sk)
{
	struct kt_conn *c;

	read_lock_bh(&sk->sk_callback_lock);
	c = sk->sk_user_data;
	if (c)
		queue_work(kt_wq, &c->work);
	read_unlock_bh(&sk->sk_callback_lock);
}

void kt_sk_write_space(struct sock *sk)
{
	struct kt_conn *c;

	read_lock_bh(&sk->sk_callback_lock);
	c = sk->sk_user_data;
	if (c && sk_stream_is_writeable(sk)) {
		clear_bit(SOCK_NOSPACE, &sk->sk_socket->flags);
		queue_work(kt_wq, &c->work);
	}
	read_unlock_bh(&sk->sk_callback_lock);
}

/* Set a socket's user data and callbacks, as one change for the callbacks. */
void kt_sk_set(struct sock *sk, void *user, void (*dr)(struct sock *),
	       void (*ws)(struct sock *), void (*sc)(struct sock *))
{
	write_lock_bh(&sk->sk_callback_lock);
	sk->sk_user_data = user;
	sk->sk_data_ready = dr;
	sk->sk_write_space = ws;
	sk->sk_state_change = sc;
	write_unlock_bh(&sk->sk_callback_lock);
}

/* Remember a socket's own callbacks before ours replace them. */
void kt_sk_save(struct sock *sk, struct kt_sk_saved *saved)
{
	read_lock_bh(&sk->sk_callback_lock);
	saved->data_ready = sk->sk_data_ready;
	saved->write_space = sk->sk_write_space;
	saved->state_change = sk->sk_state_change;
	read_unlock_bh(&sk->sk_callback_lock);
}

/* Give a socket its own callbacks back: no event reaches us after this. */
void kt_sk_restore(struct sock *sk, const struct kt_sk_saved *saved)
{
	kt_sk_set(sk, NULL, saved->data_ready, saved->write_space,
		  saved->state_change);
}

/* Bytes, an error or the end of the stream wait to be read on @sk. */
bool kt_sk_readable(const struct sock *sk)
{
	return !skb_queue_empty_lockless(&sk->sk_receive_queue) ||
	       READ_ONCE(sk->sk_err) ||
	       (READ_ONCE(sk->sk_shutdown) & RCV_SHUTDOWN);
}

/* ---- nonblocking socket calls (process context) ---------------------------- */

/* Bytes read (> 0), 0 at the end of the stream, -EAGAIN, or another -errno. */
int kt_recv(struct socket *sock, void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
	struct kvec iov = { .iov_base = buf, .iov_len = len };

	return kernel_recvmsg(sock, &msg, &iov, 1, len, MSG_DONTWAIT);
}

/*
 * Bytes sent (> 0), -EAGAIN, or another -errno.  @more: bytes of the same
 * message follow at once (MSG_MORE), so TCP need not push a segment yet.
 */
int kt_send(struct socket *sock, const void *buf, size_t len, bool more)
{
	struct msghdr msg = {
		.msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL | (more ? MSG_MORE : 0),
	};
	struct kvec iov = { .iov_base = (void *)buf, .iov_len = len };

	return kernel_sendmsg(sock, &msg, &iov, 1, len);
}

/* ---- buffers ----------------------------------------------------------------- */

/*
 * A direction's buffer is one page (order 0), taken when bytes wait to be
 * read and given back at the end of the exchange; a head larger than a page
 * grows it (kt_buf_grow) up to the head limit.
 */
int kt_buf_get(struct kt_dir *d)
{
	if (d->buf)
		return 0;
	d->buf = (u8 *)__get_free_page(KT_GFP);
	if (!d->buf)
		return -ENOMEM;
	kt_alloc_inc();
	d->cap = KT_BUF_PAGE;
	d->len = d->fwd = d->sent = 0;
	return 0;
}

static void kt_buf_free(u8 *buf, u32 cap)
{
	if (cap == KT_BUF_PAGE) {
		free_page((unsigned long)buf);
		kt_alloc_dec();
	} else {
		kt_free(buf);
	}
}

void kt_buf_put(struct kt_dir *d)
{
	if (!d->buf)
		return;
	kt_buf_free(d->buf, d->cap);
	d->buf = NULL;
	d->cap = d->len = d->fwd = d->sent = 0;
}

/* Grow @d's buffer to hold @want bytes (a large head), keeping its bytes. */
int kt_buf_grow(struct kt_dir *d, u32 want)
{
	u8 *n;

	if (want <= d->cap)
		return 0;
	n = kvmalloc(want, KT_GFP);
	if (!n)
		return -ENOMEM;
	kt_alloc_inc();
	memcpy(n, d->buf, d->len);
	kt_buf_free(d->buf, d->cap);
	d->buf = n;
	d->cap = want;
	return 0;
}

/* Drop the bytes already sent from the front of @d's buffer. */
void kt_buf_drop_sent(struct kt_dir *d)
{
	if (!d->sent)
		return;
	memmove(d->buf, d->buf + d->sent, d->len - d->sent);
	d->len -= d->sent;
	d->fwd -= d->sent;
	d->sent = 0;
}
