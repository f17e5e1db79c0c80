// SPDX-License-Identifier: GPL-2.0
/*
 * kt_io.c - socket callbacks, nonblocking socket calls, and the buffers of
 * a connection's two directions.
 */

#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <linux/tls.h>
#include <net/sock.h>
#include <net/tcp.h>

#include "kt_conn.h"

/* ---- socket callbacks ----------------------------------------------------- */

/*
 * Context: softirq, or process context from release_sock() of the socket's
 * owner.  Callbacks only kick the connection (kt_conn_kick: its tasklet or
 * its work): sk_user_data is read under sk_callback_lock, which kt_sk_set()
 * takes for writing, so once a socket is unhooked no callback can reach
 * its old owner.
 */
void kt_sk_event(struct sock *sk)
{
	struct kt_conn *c;

	read_lock_bh(&sk->sk_callback_lock);
	c = sk->sk_user_data;
	if (c)
		kt_conn_kick(c);
	read_unlock_bh(&sk->sk_callback_lock);
}

/*
 * FIN_WAIT1 and FIN_WAIT2 are the switch's own close going on: its shutdown
 * of the client's socket (inet_shutdown reports it), then the client's ACK
 * of its FIN.  Neither gives the connection anything to do; what ends its
 * lingering -- the client's FIN, a reset, the end of the socket -- moves
 * the socket to another state, and data comes with a data_ready of its own.
 */
bool kt_sk_own_close(const struct sock *sk)
{
	return (1 << READ_ONCE(sk->sk_state)) & (TCPF_FIN_WAIT1 | TCPF_FIN_WAIT2);
}

/* A client socket's state change: kicks the connection unless its own close. */
void kt_sk_state_change(struct sock *sk)
{
	if (!kt_sk_own_close(sk))
		kt_sk_event(sk);
}

void kt_sk_write_space(struct sock *sk)
{
	struct kt_conn *c;

	read_lock_bh(&sk->sk_callback_lock);
	c = sk->sk_user_data;
	if (c && sk_stream_is_writeable(sk)) {
		clear_bit(SOCK_NOSPACE, &sk->sk_socket->flags);
		kt_conn_kick(c);
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

/*
 * Bytes, an error or the end of the stream wait to be read on @sk.  On a
 * TLS socket bytes count once a whole record is there (TCP's queue holds
 * ciphertext, maybe a part of a record).
 */
bool kt_sk_readable(struct sock *sk)
{
	bool data = kt_sk_tls(sk) ? sk_is_readable(sk) :
		    !skb_queue_empty_lockless(&sk->sk_receive_queue);

	return data || READ_ONCE(sk->sk_err) ||
	       (READ_ONCE(sk->sk_shutdown) & RCV_SHUTDOWN);
}

/* ---- socket calls: the work's and the softirq run's ------------------------------ */

/*
 * Every socket call of a step is nonblocking and takes one socket lock at a
 * time.  In the work item (process context) that is lock_sock(), through
 * kernel_recvmsg/sendmsg or around tcp_read_sock/skb_send_sock_locked.  In
 * the softirq run (kt_conn_tasklet, which holds no socket lock when it
 * starts) it is the socket's spinlock, taken only when no process owns the
 * socket -- the way TCP's own tasklet (tcp_tsq_handler) sends; when a
 * process does own it, the call does nothing and the run is deferred to
 * the work item (kt_io_defer), which waits for the lock.
 */
DEFINE_PER_CPU(bool, kt_deferred);

/*
 * The page fragment sends copy into from softirq: the per-task one
 * (sk_page_frag) belongs to whichever task the softirq interrupted, so
 * during such a send the socket uses this CPU's instead (a tasklet runs on
 * one CPU with BHs off from start to end, so it is ours meanwhile).
 */
static DEFINE_PER_CPU(struct page_frag, kt_tx_frag);

/*
 * @fn(@sk, @arg) under @sk's lock, for one socket call; -EAGAIN without
 * calling it when, in softirq, a process owns the socket (the run is
 * deferred to the work, which waits for the lock).
 */
int kt_sock_call(struct sock *sk, int (*fn)(struct sock *sk, void *arg),
		 void *arg)
{
	int n;

	if (in_task()) {
		lock_sock(sk);
		n = fn(sk, arg);
		release_sock(sk);
		return n;
	}
	bh_lock_sock(sk);
	if (sock_owned_by_user(sk)) {
		bh_unlock_sock(sk);
		kt_io_defer();
		return -EAGAIN;
	}
	n = fn(sk, arg);
	bh_unlock_sock(sk);
	return n;
}

/*
 * Around a send under kt_sock_call(): in softirq the socket allocates
 * without sleeping and copies into this CPU's fragment; nothing changes in
 * process context.
 */
void kt_tx_begin(struct sock *sk, struct kt_tx_save *save)
{
	if (in_task())
		return;
	save->frag = sk->sk_frag;
	save->gfp = sk->sk_allocation;
	save->task_frag = sk->sk_use_task_frag;
	save->room = sk_stream_memory_free(sk);
	sk->sk_frag = *this_cpu_ptr(&kt_tx_frag);
	sk->sk_allocation = GFP_ATOMIC | __GFP_NOWARN;
	sk->sk_use_task_frag = false;
}

/*
 * After the send: the socket's own settings back.  A send that found room
 * in the send buffer and still could not go failed for memory, which only
 * the work item can wait for: the run is deferred to it.
 */
void kt_tx_end(struct sock *sk, struct kt_tx_save *save, int n)
{
	if (in_task())
		return;
	*this_cpu_ptr(&kt_tx_frag) = sk->sk_frag;
	sk->sk_frag = save->frag;
	sk->sk_allocation = save->gfp;
	sk->sk_use_task_frag = save->task_frag;
	if (n == -EAGAIN && save->room)
		kt_io_defer();
}

/* This CPU's fragments go with the module (after its last tasklet). */
void kt_io_exit(void)
{
	int cpu;

	for_each_possible_cpu(cpu) {
		struct page_frag *pf = per_cpu_ptr(&kt_tx_frag, cpu);

		if (pf->page)
			put_page(pf->page);
		pf->page = NULL;
	}
}

/*
 * What a tcp_read_sock() on @sk that returned @n means: bytes (> 0), 0 at
 * the end of the stream, -EAGAIN, or -errno.  Under @sk's lock.
 * Bytes wait but none could be taken (urgent data, which tcp_read_sock
 * stops at and recvmsg steps over; or memory): the work item reads.
 */
int kt_read_result(struct sock *sk, int n, int error)
{
	if (n)
		return n;
	if (error == -EAGAIN || (!error && !sk->sk_err &&
				 !skb_queue_empty(&sk->sk_receive_queue))) {
		if (!in_task())
			kt_io_defer();
		return -EAGAIN;
	}
	if (error)
		return error;
	if (sk->sk_err)
		return sock_error(sk);
	if (!(sk->sk_shutdown & RCV_SHUTDOWN))
		return -EAGAIN;
	return 0;
}

/* tcp_read_sock() actor of kt_recv() in softirq: copy into desc->arg.data. */
static int kt_copy_actor(read_descriptor_t *desc, struct sk_buff *skb,
			 unsigned int off, size_t len)
{
	size_t n = min_t(size_t, len, desc->count);

	if (!n)
		return 0;
	if (skb_copy_bits(skb, off, desc->arg.data, n)) {
		desc->error = -EFAULT;
		return 0;
	}
	desc->arg.data = (u8 *)desc->arg.data + n;
	desc->count -= n;
	return n;
}

static int kt_recv_locked(struct sock *sk, void *arg)
{
	read_descriptor_t *desc = arg;

	return kt_read_result(sk, tcp_read_sock(sk, desc, kt_copy_actor),
			      desc->error);
}

/*
 * A read of plaintext from a TLS socket (docs/tls.md): TLS's recvmsg
 * decrypts, and says each record's type in a control message.  A record
 * that is not application data -- an alert, a KeyUpdate, any handshake
 * message -- is something the kernel cannot act on: -EPROTO, and the
 * connection ends.  Process context only (TLS takes the socket lock).
 */
static int kt_recv_tls(struct socket *sock, void *buf, size_t len)
{
	u8 cbuf[CMSG_SPACE(sizeof(u8))] __aligned(sizeof(size_t));
	struct msghdr msg = {
		.msg_control = cbuf,
		.msg_controllen = sizeof(cbuf),
		.msg_flags = MSG_DONTWAIT,
	};
	struct kvec iov = { .iov_base = buf, .iov_len = len };
	struct cmsghdr *cmsg = (struct cmsghdr *)cbuf;
	int n;

	n = kernel_recvmsg(sock, &msg, &iov, 1, len, MSG_DONTWAIT);
	if (n < 0)
		return n == -EIO ? -EPROTO : n;
	/* put_cmsg() moved msg_control on if it wrote the record type */
	if (msg.msg_controllen < sizeof(cbuf) && cmsg->cmsg_level == SOL_TLS &&
	    cmsg->cmsg_type == TLS_GET_RECORD_TYPE &&
	    *(u8 *)CMSG_DATA(cmsg) != KT_TLS_RECORD_DATA)
		return -EPROTO;
	return n;
}

/* Bytes read (> 0), 0 at the end of the stream, -EAGAIN, or another -errno. */
int kt_recv(struct socket *sock, void *buf, size_t len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT };
	struct kvec iov = { .iov_base = buf, .iov_len = len };
	read_descriptor_t desc = { .arg.data = buf, .count = len };

	if (kt_sk_tls(sock->sk)) {
		if (WARN_ON_ONCE(!in_task())) {
			kt_io_defer();
			return -EAGAIN;
		}
		return kt_recv_tls(sock, buf, len);
	}
	if (in_task())
		return kernel_recvmsg(sock, &msg, &iov, 1, len, MSG_DONTWAIT);
	return kt_sock_call(sock->sk, kt_recv_locked, &desc);
}

struct kt_sendv_args {
	struct msghdr msg;
	struct kvec *iov;
	size_t nr, len;
};

static int kt_sendv_locked(struct sock *sk, void *arg)
{
	struct kt_sendv_args *a = arg;
	struct kt_tx_save save;
	int n;

	kt_tx_begin(sk, &save);
	n = kernel_sendmsg_locked(sk, &a->msg, a->iov, a->nr, a->len);
	kt_tx_end(sk, &save, n);
	return n;
}

/*
 * Bytes sent (> 0), -EAGAIN, or another -errno.  @more: bytes of the same
 * message follow at once (MSG_MORE), so TCP need not push a segment yet.
 */
int kt_sendv(struct socket *sock, struct kvec *iov, size_t nr, size_t len,
	     bool more)
{
	struct kt_sendv_args a = {
		.msg.msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL |
				 (more ? MSG_MORE : 0),
		.iov = iov, .nr = nr, .len = len,
	};

	/* TLS encrypts in its sendmsg; the _locked send would bypass it */
	if (in_task())
		return kernel_sendmsg(sock, &a.msg, iov, nr, len);
	if (WARN_ON_ONCE(kt_sk_tls(sock->sk))) {
		kt_io_defer();
		return -EAGAIN;
	}
	return kt_sock_call(sock->sk, kt_sendv_locked, &a);
}

/*
 * The end of what we send on @sock: on a TLS socket a close_notify alert
 * first (RFC 8446 6.1), as its own record, so that the client can tell the
 * end from a truncation.  Process context.
 */
void kt_sock_shutdown_wr(struct socket *sock)
{
	static const u8 close_notify[2] = { 1, 0 };	/* warning, close_notify */
	u8 cbuf[CMSG_SPACE(sizeof(u8))] __aligned(sizeof(size_t));
	struct msghdr msg = {
		.msg_control = cbuf,
		.msg_controllen = sizeof(cbuf),
		.msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL,
	};
	struct kvec iov = {
		.iov_base = (void *)close_notify, .iov_len = sizeof(close_notify),
	};
	struct cmsghdr *cmsg = (struct cmsghdr *)cbuf;

	if (kt_sk_tls(sock->sk)) {
		cmsg->cmsg_level = SOL_TLS;
		cmsg->cmsg_type = TLS_SET_RECORD_TYPE;
		cmsg->cmsg_len = CMSG_LEN(sizeof(u8));
		*(u8 *)CMSG_DATA(cmsg) = KT_TLS_RECORD_ALERT;
		kernel_sendmsg(sock, &msg, &iov, 1, sizeof(close_notify));
	}
	kernel_sock_shutdown(sock, SHUT_WR);
}

int kt_send(struct socket *sock, const void *buf, size_t len, bool more)
{
	struct kvec iov = { .iov_base = (void *)buf, .iov_len = len };

	return kt_sendv(sock, &iov, 1, len, more);
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
	d->buf = (u8 *)__get_free_page(kt_gfp());
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
	n = kvmalloc(want, kt_gfp());
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
