// SPDX-License-Identifier: GPL-2.0
/*
 * kt_tls.c - HTTPS: taking over a client connection whose TLS handshake was
 * done in user space and whose two directions are in kernel TLS
 * (docs/tls.md).  The acceptor sends KTCPVS_CMD_TLS_ADOPT with the socket's
 * descriptor; here it is checked, the service's and the source's limits
 * are applied as for an accepted connection (kt_listen.c), and it becomes
 * a connection of the service (kt_conn_adopt).  From then on the data
 * path is the plain one; only the socket calls differ (kt_io.c: TLS's
 * recvmsg and sendmsg, never the zero-copy relay).
 */

#include <linux/file.h>
#include <linux/net.h>
#include <linux/sched/mm.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <net/tls.h>

#include "kt_conn.h"

/*
 * The socket is an established TCP socket of this namespace with both
 * directions in software kernel TLS, and no one else's: marked ours
 * (sk_user_data) on success, so that a second handover of it fails.
 * Context: process; takes the socket's lock.
 */
static int kt_tls_claim(struct kt_net *ktn, struct socket *sock,
			struct netlink_ext_ack *extack)
{
	struct sock *sk = sock->sk;
	const struct tls_context *ctx;
	int err = 0;

	if (sk->sk_protocol != IPPROTO_TCP || sk->sk_type != SOCK_STREAM ||
	    (sk->sk_family != AF_INET && sk->sk_family != AF_INET6)) {
		NL_SET_ERR_MSG(extack, "not a TCP socket");
		return -EINVAL;
	}
	if (!net_eq(sock_net(sk), ktn->net)) {
		NL_SET_ERR_MSG(extack, "the socket is of another network namespace");
		return -EINVAL;
	}
	lock_sock(sk);
	if (sk->sk_state != TCP_ESTABLISHED && sk->sk_state != TCP_CLOSE_WAIT) {
		NL_SET_ERR_MSG(extack, "the socket is not connected");
		err = -ENOTCONN;
		goto out;
	}
	ctx = kt_sk_tls(sk) && !strcmp(inet_csk(sk)->icsk_ulp_ops->name, "tls") ?
	      tls_get_ctx(sk) : NULL;
	if (!ctx || ctx->tx_conf != TLS_SW || ctx->rx_conf != TLS_SW) {
		NL_SET_ERR_MSG(extack,
			       "both directions must be in kernel TLS (TLS_TX and TLS_RX)");
		err = -EINVAL;
		goto out;
	}
	write_lock_bh(&sk->sk_callback_lock);
	if (sk->sk_user_data) {
		NL_SET_ERR_MSG(extack, "the socket is already taken");
		err = -EBUSY;
	} else {
		sk->sk_user_data = ktn;	/* a mark only: nothing reads it */
	}
	write_unlock_bh(&sk->sk_callback_lock);
out:
	release_sock(sk);
	return err;
}

/* The socket is no longer ours (a failed handover, or the connection's end). */
void kt_tls_unclaim(struct sock *sk)
{
	write_lock_bh(&sk->sk_callback_lock);
	sk->sk_user_data = NULL;
	write_unlock_bh(&sk->sk_callback_lock);
}

/*
 * KTCPVS_A_TLS_NAMES: host names, each NUL-terminated, of 1 to 253 bytes
 * of lower-case letters, digits, '-', '_' and '.', or "*." and such a
 * name (a wildcard for one label).  The policy bounds the length.
 */
static bool kt_tls_names_valid(const char *p, u32 len)
{
	u32 i, start = 0;

	if (!len || p[len - 1])
		return false;
	for (i = 0; i < len; i++) {
		char ch = p[i];

		if (!ch) {
			if (i == start || i - start > 253 ||
			    (p[start] == '*' && i - start < 3))
				return false;
			start = i + 1;
		} else if (ch == '*') {
			if (i != start || p[i + 1] != '.')
				return false;
		} else if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
			     ch == '-' || ch == '_' || ch == '.')) {
			return false;
		}
	}
	return true;
}

/*
 * Does one of @names (as above) cover @host (lower case, no port: the
 * parser's)?  An exact name, or "*.rest" for one label before "rest".  A
 * trailing dot of the host is not part of its name.  Any context.
 */
bool kt_tls_host_ok(const char *names, u32 len, const u8 *host, u32 hlen)
{
	const char *n = names, *end = names + len;

	if (hlen && host[hlen - 1] == '.')
		hlen--;
	while (n < end) {
		u32 nl = strlen(n);

		if (n[0] == '*') {
			const u8 *dot = memchr(host, '.', hlen);

			if (dot && dot != host && host + hlen - dot == nl - 1 &&
			    !memcmp(dot, n + 1, nl - 1))
				return true;
		} else if (nl == hlen && !memcmp(n, host, hlen)) {
			return true;
		}
		n += nl + 1;
	}
	return false;
}

/* The namespace's, the service's and the source's limits, as at accept. */
static int kt_tls_limits(struct kt_net *ktn, struct kt_service *svc,
			 const union kt_addr *peer,
			 struct kt_src **src, struct netlink_ext_ack *extack)
{
	u32 max = READ_ONCE(ktn->max_conns);

	if (max && (u32)atomic_read(&ktn->nconns) >= max) {
		NL_SET_ERR_MSG(extack, "the namespace is at its connection limit");
		return -EBUSY;
	}
	switch (kt_conn_admit(ktn, svc, peer, src)) {
	case 0:
		return 0;
	case 503:
		NL_SET_ERR_MSG(extack, "the service is at its connection limit");
		return -EBUSY;
	default:
		NL_SET_ERR_MSG(extack, "the client is at its source limit");
		return -EBUSY;
	}
}

/*
 * KTCPVS_CMD_TLS_ADOPT: the caller's socket @fd becomes a client connection
 * of the service listening on @la.  On success the module holds its own
 * reference to the socket's file; the caller closes its descriptor.
 * Context: the caller's netlink request (process context, genl_mutex).
 */
int kt_tls_adopt(struct kt_net *ktn, int fd, const union kt_addr *la,
		 const struct nlattr *names, struct netlink_ext_ack *extack)
{
	union kt_addr peer;
	struct kt_service *svc;
	struct kt_src *src = NULL;
	struct kt_config *cfg = NULL;
	struct mem_cgroup *old;
	struct kt_conn_tls *tls;
	struct socket *sock;
	u32 nlen;
	int err;

	if (names && !kt_tls_names_valid(nla_data(names), nla_len(names))) {
		NL_SET_ERR_MSG_ATTR(extack, names,
				    "host names: NUL-terminated, lower case, \"*.\" wildcards");
		return -EINVAL;
	}
	sock = sockfd_lookup(fd, &err);
	if (!sock) {
		NL_SET_ERR_MSG(extack, "not a socket's file descriptor");
		return err;
	}
	err = kt_tls_claim(ktn, sock, extack);
	if (err)
		goto err_put;
	cfg = kt_config_tryget(ktn);
	svc = cfg ? kt_config_service(cfg, la) : NULL;
	if (!svc) {
		NL_SET_ERR_MSG(extack, "no service listens on that address");
		err = -ENOENT;
		goto err_unclaim;
	}
	if (!(svc->flags & KT_SERVICE_TLS)) {
		NL_SET_ERR_MSG(extack, "the service on that address is not a TLS service");
		err = -EINVAL;
		goto err_unclaim;
	}
	if (kernel_getpeername(sock, &peer.sa) < 0) {
		NL_SET_ERR_MSG(extack, "the socket has no peer");
		err = -ENOTCONN;
		goto err_unclaim;
	}
	err = kt_tls_limits(ktn, svc, &peer, &src, extack);
	if (err)
		goto err_unclaim;
	percpu_ref_get(&cfg->ref);	/* the connection's */
	old = set_active_memcg(cfg->memcg);
	nlen = names ? nla_len(names) : 0;
	tls = kzalloc(struct_size(tls, names, nlen), KT_GFP);
	if (tls) {
		kt_alloc_inc();
		tls->names_len = nlen;
		if (nlen)
			memcpy(tls->names, nla_data(names), nlen);
	}
	err = tls ? kt_conn_adopt(ktn, svc, cfg, sock, &peer, src, tls) :
	      -ENOMEM;
	set_active_memcg(old);
	if (err) {
		if (tls) {
			kfree(tls);
			kt_alloc_dec();
		}
		kt_config_put(cfg);
		if (src)
			kt_src_detach(ktn, src);
		goto err_unclaim;
	}
	kt_config_put(cfg);
	return 0;

err_unclaim:
	if (cfg)
		kt_config_put(cfg);
	kt_tls_unclaim(sock->sk);
err_put:
	sockfd_put(sock);
	return err;
}
