// SPDX-License-Identifier: GPL-2.0
/*
 * l7ctl._tlsloop - the TLS daemon's handshakes, from accept to handover
 * (l7ctl/tlsd.py, docs/tls.md), in C around the OpenSSL contexts that
 * Python's ssl module made.
 *
 *   svc = _tlsloop.Service(name, certs)
 *       certs: [(context, ssl_ctx, names, adopt)], the default first:
 *       context the ssl.SSLContext (kept alive), ssl_ctx its SSL_CTX
 *       pointer (l7ctl.libssl.ssl_ctx), names the certificate's host names
 *       (lower case, "*." wildcards), adopt the encoded netlink attributes
 *       the handover sends after the descriptor (the service's address, the
 *       names).  Sets this module's SNI and key log callbacks on every
 *       context.
 *   loop = _tlsloop.Loop(wake_fd, handshake_timeout, max_handshakes,
 *                        max_per_source, events, log)
 *   loop.listen(fd, svc) / loop.unlisten(fd)   listeners (the caller's)
 *   loop.run(timeout) -> [event]   steps handshakes until WAKE_FD is
 *       readable, a signal comes, events are to be written, or TIMEOUT
 *       seconds pass; events (only when EVENTS) are tuples (outcome,
 *       service, client, sni, version, cipher, error, resumed, ms)
 *   loop.counters() -> (adopted, resumed, failed, timed_out, over_limit,
 *                       refused)
 *   loop.pending() -> (handshakes, sources)
 *   loop.close() -> [event]   ends every handshake ("the daemon stopped")
 *   _tlsloop.pick(certificates, sni) -> int   the SNI choice
 *   _tlsloop.tls13_rx_info(cipher, secret) -> bytes   the kernel's blob
 *
 * Why C: under the bench's emulation the Python around each handshake
 * (accept, peek, wrap, selector, handover) cost a third of the daemon's CPU
 * per connection (docs/tls.md).  Configuration, listeners, reloads, ticket
 * keys and signals stay in Python; nothing here runs Python per connection.
 *
 * The GIL is let go only while epoll waits (the handshakes' state is
 * touched with it held): Python signal handlers run when run() returns,
 * which it does at once on EINTR or when the wakeup descriptor
 * (signal.set_wakeup_fd) is readable.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ktcpvs.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

/* A ClientHello's first bytes: record header (5), handshake header (4),
 * legacy_version (2), random (32).  RFC 8446 section 4.1.2. */
#define HELLO_PEEK 43
#define ACCEPT_BATCH 64
#define SOURCE_BUCKETS 4096
#define SECRET_MAX 48 /* SHA-384 */
#define SNI_MAX 255
#define PAUSE_S 0.1 /* a listener out of descriptors or memory rests */
#define PAUSE_LOG_S 10.0
#define NL_TIMEOUT_S 10

enum tl_kind { TL_WAKE, TL_LISTENER, TL_CONN };

struct tl_cert {
	SSL_CTX *ctx; /* a reference of our own */
	char **names;
	Py_ssize_t n_names;
	unsigned char *adopt;
	Py_ssize_t adopt_len;
};

typedef struct {
	PyObject_HEAD
	PyObject *name;
	PyObject *holds; /* the certs argument: the ssl.SSLContext objects */
	Py_ssize_t n_certs;
	struct tl_cert *certs;
} ServiceObject;

struct tl_listener {
	enum tl_kind kind; /* TL_LISTENER: first, epoll's data.ptr names it */
	int fd;
	ServiceObject *svc;
	double paused_until; /* 0: in the epoll set */
	double logged_at;
};

struct tl_conn {
	enum tl_kind kind; /* TL_CONN */
	struct tl_conn *prev, *next; /* pending, in accept order (deadline) */
	struct tl_conn *src_next; /* the source's bucket */
	int fd;
	ServiceObject *svc;
	Py_ssize_t cert; /* the certificate chosen (SNI) */
	SSL *ssl;
	unsigned char addr[16];
	int addr_len;
	char peer[INET6_ADDRSTRLEN];
	double started, deadline; /* CLOCK_MONOTONIC s; started 0: never */
	unsigned char secret[SECRET_MAX];
	int secret_len;
	char sni[SNI_MAX + 1];
	int has_sni;
};

struct tl_counters {
	unsigned long long adopted, resumed, failed, timed_out, over_limit, refused;
};

typedef struct {
	PyObject_HEAD
	int epfd;
	int wake_fd;
	enum tl_kind wake_kind; /* epoll's data.ptr for the wakeup descriptor */
	double timeout;
	Py_ssize_t max_handshakes, max_per_source;
	int events;
	PyObject *log;
	struct tl_conn head; /* the pending list's anchor */
	Py_ssize_t n_pending, n_sources;
	struct tl_conn *sources[SOURCE_BUCKETS];
	struct tl_listener **listeners;
	Py_ssize_t n_listeners;
	struct tl_counters counters;
	PyObject *out; /* run()'s events */
	int nl_fd;
	int nl_family;
	unsigned int nl_seq;
} LoopObject;

static int conn_index = -1; /* SSL ex_data: the struct tl_conn */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the SNI choice (l7ctl/tlscert.py pick, name_matches) -------------- */

/* HOST (lower case, no trailing dot) against a "*." PATTERN: one label */
static int wildcard_covers(const char *pattern, const char *host)
{
	const char *dot = strchr(host, '.');

	return dot && dot != host && !strcmp(dot + 1, pattern + 2);
}

/* The certificate a handshake chooses among CERTS by the client's NAME:
 * the first with the name exactly, else the first that covers it by a
 * wildcard, else the first. */
static Py_ssize_t pick_cert(const struct tl_cert *certs, Py_ssize_t n, const char *sni)
{
	char name[SNI_MAX + 1];
	size_t len = strnlen(sni, SNI_MAX + 1);
	Py_ssize_t i, j;

	if (!len || len > SNI_MAX)
		return 0;
	for (j = 0; j < (Py_ssize_t)len; j++)
		name[j] = (char)(sni[j] >= 'A' && sni[j] <= 'Z' ? sni[j] + 32 : sni[j]);
	while (len && name[len - 1] == '.')
		len--;
	name[len] = '\0';
	for (i = 0; i < n; i++)
		for (j = 0; j < certs[i].n_names; j++)
			if (!strcmp(certs[i].names[j], name))
				return i;
	for (i = 0; i < n; i++)
		for (j = 0; j < certs[i].n_names; j++)
			if (!strncmp(certs[i].names[j], "*.", 2) &&
			    wildcard_covers(certs[i].names[j], name))
				return i;
	return 0;
}

/* OpenSSL's servername callback, on every context of a Service: a
 * handshake of ours switches to the certificate its SNI names. */
static int sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct tl_conn *c = SSL_get_ex_data(ssl, conn_index);
	const char *name;
	Py_ssize_t i;

	(void)alert;
	(void)arg;
	if (!c)
		return SSL_TLSEXT_ERR_NOACK;
	name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (!name || !*name)
		return SSL_TLSEXT_ERR_OK;
	snprintf(c->sni, sizeof(c->sni), "%s", name);
	c->has_sni = 1;
	i = pick_cert(c->svc->certs, c->svc->n_certs, name);
	if (i != c->cert) {
		if (SSL_set_SSL_CTX(ssl, c->svc->certs[i].ctx) != c->svc->certs[i].ctx)
			return SSL_TLSEXT_ERR_ALERT_FATAL;
		c->cert = i;
	}
	return SSL_TLSEXT_ERR_OK;
}

static int unhex(const char *s, size_t n, unsigned char *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		int hi = OPENSSL_hexchar2int((unsigned char)s[2 * i]);
		int lo = OPENSSL_hexchar2int((unsigned char)s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

/* OpenSSL's key log callback (NSS key log lines: label, client random,
 * secret, in hex), called inside the handshake call that makes the line:
 * TLS 1.3's client traffic secret is kept with its handshake, the one key
 * the kernel's receive side needs from here.  Nothing else is kept. */
static void keylog_cb(const SSL *ssl, const char *line)
{
	static const char label[] = "CLIENT_TRAFFIC_SECRET_0 ";
	struct tl_conn *c = SSL_get_ex_data(ssl, conn_index);
	const char *sp;
	size_t hex;

	if (!c || strncmp(line, label, sizeof(label) - 1))
		return;
	sp = strchr(line + sizeof(label) - 1, ' ');
	if (!sp)
		return;
	hex = strlen(sp + 1);
	if (hex % 2 || hex / 2 > SECRET_MAX || unhex(sp + 1, hex / 2, c->secret))
		return;
	c->secret_len = (int)(hex / 2);
}

/* ---- kernel TLS: the receive side of TLS 1.3 (l7ctl/ktls.py) ----------- */

struct tl_suite {
	const char *name;
	unsigned short kernel_id;
	const char *digest;
	int key_size, salt_size, iv_size;
};

static const struct tl_suite suites[] = {
	{ "TLS_AES_128_GCM_SHA256", TLS_CIPHER_AES_GCM_128, "SHA256", 16, 4, 8 },
	{ "TLS_AES_256_GCM_SHA384", TLS_CIPHER_AES_GCM_256, "SHA384", 32, 4, 8 },
	{ "TLS_CHACHA20_POLY1305_SHA256", TLS_CIPHER_CHACHA20_POLY1305, "SHA256", 32, 0, 12 },
};

static const struct tl_suite *find_suite(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
		if (!strcmp(suites[i].name, name))
			return &suites[i];
	return NULL;
}

/* HKDF-Expand-Label (RFC 8446 section 7.1) with an empty context */
static int expand_label(const EVP_MD *md, const unsigned char *secret, int secret_len,
			const char *label, unsigned char *out, int len)
{
	unsigned char info[2 + 1 + 6 + 16 + 1 + 1], block[EVP_MAX_MD_SIZE];
	unsigned char in[EVP_MAX_MD_SIZE + sizeof(info) + 1];
	size_t lab = strlen(label), info_len = 0, prev = 0;
	unsigned int blen;
	int done = 0, i = 1;

	info[info_len++] = (unsigned char)(len >> 8);
	info[info_len++] = (unsigned char)len;
	info[info_len++] = (unsigned char)(6 + lab);
	memcpy(info + info_len, "tls13 ", 6);
	memcpy(info + info_len + 6, label, lab);
	info_len += 6 + lab;
	info[info_len++] = 0; /* the context's length */
	while (done < len) {
		memcpy(in, block, prev);
		memcpy(in + prev, info, info_len);
		in[prev + info_len] = (unsigned char)i++;
		if (!HMAC(md, secret, secret_len, in, prev + info_len + 1, block, &blen))
			return -1;
		memcpy(out + done, block, (size_t)(len - done < (int)blen ? len - done : (int)blen));
		done += (int)blen;
		prev = blen;
	}
	OPENSSL_cleanse(block, sizeof(block));
	OPENSSL_cleanse(in, sizeof(in));
	return 0;
}

#define RX_INFO_MAX 64

/* The crypto_info blob of a TLS 1.3 direction from its traffic secret, the
 * record sequence at 0: version, cipher, iv (the nonce's explicit part),
 * key, salt, rec_seq (include/uapi/linux/tls.h).  Its length, or -1. */
static int tls13_info(const struct tl_suite *s, const unsigned char *secret, int secret_len,
		      unsigned char *out)
{
	const EVP_MD *md = EVP_get_digestbyname(s->digest);
	unsigned char iv[12];
	unsigned short v[2] = { TLS_1_3_VERSION, s->kernel_id };
	int n = 0;

	if (!md || EVP_MD_get_size(md) != secret_len)
		return -1;
	memcpy(out, v, sizeof(v));
	n += (int)sizeof(v);
	if (expand_label(md, secret, secret_len, "iv", iv, 12) ||
	    expand_label(md, secret, secret_len, "key", out + n + s->iv_size, s->key_size))
		return -1;
	memcpy(out + n, iv + s->salt_size, (size_t)s->iv_size);
	n += s->iv_size + s->key_size;
	memcpy(out + n, iv, (size_t)s->salt_size);
	n += s->salt_size;
	memset(out + n, 0, 8);
	n += 8;
	OPENSSL_cleanse(iv, sizeof(iv));
	return n;
}

/* ---- the handover: KTCPVS_CMD_TLS_ADOPT over generic netlink ----------- */

#define NL_BUF 8192

static int nl_exchange(LoopObject *lp, int type, int cmd, int version, const void *payload,
		       size_t len, char *msg, size_t msg_len, int *family);

static void nl_close(LoopObject *lp)
{
	if (lp->nl_fd >= 0)
		close(lp->nl_fd);
	lp->nl_fd = -1;
	lp->nl_family = 0;
}

/* A socket bound to the ktcpvs family: 0, or an errno (MSG says more) */
static int nl_open(LoopObject *lp, char *msg, size_t msg_len)
{
	struct timeval tv = { .tv_sec = NL_TIMEOUT_S };
	unsigned char attr[NLA_HDRLEN + NLA_ALIGN(sizeof(KTCPVS_GENL_NAME))] = { 0 };
	struct nlattr *nla = (struct nlattr *)attr;
	int one = 1, family = 0, err;

	lp->nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (lp->nl_fd < 0)
		return errno;
	if (setsockopt(lp->nl_fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one)) ||
	    setsockopt(lp->nl_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv))) {
		err = errno;
		nl_close(lp);
		return err;
	}
	nla->nla_type = CTRL_ATTR_FAMILY_NAME;
	nla->nla_len = NLA_HDRLEN + sizeof(KTCPVS_GENL_NAME);
	memcpy(attr + NLA_HDRLEN, KTCPVS_GENL_NAME, sizeof(KTCPVS_GENL_NAME));
	err = nl_exchange(lp, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, attr, sizeof(attr), msg,
			  msg_len, &family);
	if (!err && !family)
		err = EPROTO;
	if (err) {
		nl_close(lp);
		return err;
	}
	lp->nl_family = family;
	return 0;
}

/* The family id in a CTRL_CMD_NEWFAMILY reply, or 0 */
static int family_id(const struct nlmsghdr *h)
{
	const struct nlattr *a = (const void *)((const char *)NLMSG_DATA(h) + GENL_HDRLEN);
	int left = (int)h->nlmsg_len - NLMSG_HDRLEN - GENL_HDRLEN;

	while (left >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= left) {
		if ((a->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_FAMILY_ID &&
		    a->nla_len >= NLA_HDRLEN + 2)
			return *(const unsigned short *)((const char *)a + NLA_HDRLEN);
		left -= NLA_ALIGN(a->nla_len);
		a = (const void *)((const char *)a + NLA_ALIGN(a->nla_len));
	}
	return 0;
}

/* The kernel's message in an NLMSG_ERROR with NLM_F_ACK_TLVS */
static void ack_message(const struct nlmsghdr *h, char *msg, size_t msg_len)
{
	const struct nlmsgerr *e = NLMSG_DATA(h);
	size_t off = NLMSG_HDRLEN + sizeof(*e);
	const struct nlattr *a;

	if (!(h->nlmsg_flags & NLM_F_ACK_TLVS))
		return;
	if (!(h->nlmsg_flags & NLM_F_CAPPED))
		off += NLMSG_ALIGN(e->msg.nlmsg_len) - NLMSG_HDRLEN;
	while (off + NLA_HDRLEN <= h->nlmsg_len) {
		a = (const void *)((const char *)h + off);
		if (a->nla_len < NLA_HDRLEN || off + a->nla_len > h->nlmsg_len)
			return;
		if (a->nla_type == NLMSGERR_ATTR_MSG) {
			snprintf(msg, msg_len, "%.*s", (int)(a->nla_len - NLA_HDRLEN),
				 (const char *)a + NLA_HDRLEN);
			return;
		}
		off += NLA_ALIGN(a->nla_len);
	}
}

/* Send one request with NLM_F_ACK and wait for its answer: 0, or the errno
 * the kernel (or the socket) gave, with the kernel's message in MSG.  A
 * reply message before the ack is read for a family id (FAMILY). */
static int nl_exchange(LoopObject *lp, int type, int cmd, int version, const void *payload,
		       size_t len, char *msg, size_t msg_len, int *family)
{
	union {
		struct nlmsghdr h;
		char buf[NL_BUF];
	} u;
	struct genlmsghdr *g = (struct genlmsghdr *)((char *)&u.h + NLMSG_HDRLEN);
	size_t total = NLMSG_HDRLEN + GENL_HDRLEN + len;
	unsigned int seq = ++lp->nl_seq;
	ssize_t n;

	if (total > sizeof(u))
		return EMSGSIZE;
	memset(&u.h, 0, NLMSG_HDRLEN + GENL_HDRLEN);
	u.h.nlmsg_len = (unsigned int)total;
	u.h.nlmsg_type = (unsigned short)type;
	u.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	u.h.nlmsg_seq = seq;
	g->cmd = (unsigned char)cmd;
	g->version = (unsigned char)version;
	memcpy((char *)g + GENL_HDRLEN, payload, len);
	if (send(lp->nl_fd, &u, total, 0) != (ssize_t)total)
		return errno ? errno : EIO;
	for (;;) {
		struct nlmsghdr *h;
		int left;

		n = recv(lp->nl_fd, &u, sizeof(u), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? ETIMEDOUT : errno;
		left = (int)n;
		for (h = &u.h; NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
			if (h->nlmsg_seq != seq)
				continue; /* a late answer to an earlier request */
			if (h->nlmsg_type == NLMSG_ERROR) {
				const struct nlmsgerr *e = NLMSG_DATA(h);

				if (h->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
					return EPROTO;
				if (e->error)
					ack_message(h, msg, msg_len);
				return -e->error;
			}
			if (family)
				*family = family_id(h);
		}
	}
}

/* ---- the pending handshakes -------------------------------------------- */

static unsigned int source_hash(const unsigned char *a, int len)
{
	unsigned int h = 2166136261u;
	int i;

	for (i = 0; i < len; i++)
		h = (h ^ a[i]) * 16777619u;
	return h & (SOURCE_BUCKETS - 1);
}

static Py_ssize_t source_count(LoopObject *lp, const unsigned char *a, int len)
{
	struct tl_conn *c;
	Py_ssize_t n = 0;

	for (c = lp->sources[source_hash(a, len)]; c; c = c->src_next)
		n += c->addr_len == len && !memcmp(c->addr, a, (size_t)len);
	return n;
}

/* One line of the events: a handshake ended (or refused at accept) */
static void event(LoopObject *lp, const char *outcome, const struct tl_conn *c, const char *error)
{
	const char *version = "", *cipher = "";
	int resumed = 0;
	PyObject *ev, *sni;

	if (!lp->events || !lp->out)
		return;
	if (c->ssl && SSL_is_init_finished(c->ssl)) {
		const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);

		version = SSL_get_version(c->ssl);
		cipher = ci ? SSL_CIPHER_get_name(ci) : "";
		resumed = SSL_session_reused(c->ssl);
	}
	sni = c->has_sni ? PyUnicode_DecodeLatin1(c->sni, (Py_ssize_t)strlen(c->sni), NULL)
			 : Py_NewRef(Py_None);
	ev = sni ? Py_BuildValue("(sOsNsssNd)", outcome, c->svc->name, c->peer, sni, version,
				 cipher, error, PyBool_FromLong(resumed),
				 c->started ? (now_s() - c->started) * 1000.0 : 0.0)
		 : NULL;
	if (!ev || PyList_Append(lp->out, ev))
		PyErr_Clear(); /* a line lost, never the handshake's outcome */
	Py_XDECREF(ev);
}

/* Forget a handshake: its socket closed (unless handed over already), its
 * OpenSSL object freed, its secret wiped. */
static void conn_end(LoopObject *lp, struct tl_conn *c, const char *outcome, const char *error)
{
	struct tl_conn **pp;

	event(lp, outcome, c, error);
	c->prev->next = c->next;
	c->next->prev = c->prev;
	lp->n_pending--;
	for (pp = &lp->sources[source_hash(c->addr, c->addr_len)]; *pp; pp = &(*pp)->src_next)
		if (*pp == c) {
			*pp = c->src_next;
			break;
		}
	if (!source_count(lp, c->addr, c->addr_len))
		lp->n_sources--;
	if (c->fd >= 0) {
		epoll_ctl(lp->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	if (c->ssl)
		SSL_free(c->ssl); /* the socket BIO does not close the descriptor */
	Py_DECREF(c->svc);
	OPENSSL_cleanse(c->secret, sizeof(c->secret));
	PyMem_Free(c);
}

static void conn_fail(LoopObject *lp, struct tl_conn *c, const char *why)
{
	lp->counters.failed++;
	conn_end(lp, c, "failed", why);
}

/* "handshake: " and OpenSSL's reason for the last error */
static void conn_fail_ssl(LoopObject *lp, struct tl_conn *c, int err)
{
	char why[256], reason[200];
	unsigned long e = ERR_peek_last_error();

	if (e)
		ERR_error_string_n(e, reason, sizeof(reason));
	else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
		snprintf(reason, sizeof(reason), "%s", errno ? strerror(errno) : "the client closed");
	else
		snprintf(reason, sizeof(reason), "OpenSSL error %d", err);
	ERR_clear_error();
	snprintf(why, sizeof(why), "handshake: %s", reason);
	conn_fail(lp, c, why);
}

static void conn_watch(LoopObject *lp, struct tl_conn *c, unsigned int events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };

	if (epoll_ctl(lp->epfd, EPOLL_CTL_MOD, c->fd, &ev))
		conn_fail(lp, c, strerror(errno));
}

/* The handshake is done: the receive side of TLS 1.3 into the kernel (the
 * sending side, and both of TLS 1.2, OpenSSL put there itself), then the
 * socket to the module. */
static void conn_handover(LoopObject *lp, struct tl_conn *c)
{
	const SSL_CIPHER *ci = SSL_get_current_cipher(c->ssl);
	const struct tl_cert *cert = &c->svc->certs[c->cert];
	unsigned char msg[NLA_HDRLEN + 4 + 1024];
	char why[300], kmsg[200] = "";
	struct nlattr *fd_attr = (struct nlattr *)msg;
	size_t len;
	int err, resolving;

	if (!ci) {
		conn_fail(lp, c, "no cipher after the handshake");
		return;
	}
	if (SSL_version(c->ssl) == TLS1_3_VERSION) {
		const struct tl_suite *s = find_suite(SSL_CIPHER_get_name(ci));
		unsigned char info[RX_INFO_MAX], ulp[16] = "";
		socklen_t ulp_len = sizeof(ulp);
		int n;

		if (!c->secret_len) {
			conn_fail(lp, c, "no client traffic secret in the key log");
			return;
		}
		if (!s) {
			snprintf(why, sizeof(why), "cipher %s cannot run in kernel TLS",
				 SSL_CIPHER_get_name(ci));
			conn_fail(lp, c, why);
			return;
		}
		n = tls13_info(s, c->secret, c->secret_len, info);
		OPENSSL_cleanse(c->secret, sizeof(c->secret));
		c->secret_len = 0;
		if (n < 0) {
			conn_fail(lp, c, "the client traffic secret does not fit its cipher");
			return;
		}
		if ((getsockopt(c->fd, IPPROTO_TCP, TCP_ULP, ulp, &ulp_len) || strcmp((char *)ulp, "tls")) &&
		    setsockopt(c->fd, IPPROTO_TCP, TCP_ULP, "tls", 3)) {
			snprintf(why, sizeof(why), "handshake: kernel TLS: %s", strerror(errno));
			OPENSSL_cleanse(info, sizeof(info));
			conn_fail(lp, c, why);
			return;
		}
		err = setsockopt(c->fd, SOL_TLS, TLS_RX, info, (socklen_t)n) ? errno : 0;
		OPENSSL_cleanse(info, sizeof(info));
		if (err) {
			snprintf(why, sizeof(why), "handshake: kernel TLS receive: %s", strerror(err));
			conn_fail(lp, c, why);
			return;
		}
	}
	if ((size_t)cert->adopt_len > sizeof(msg) - NLA_HDRLEN - 4) {
		conn_fail(lp, c, "the handover's attributes are too long");
		return;
	}
	fd_attr->nla_type = KTCPVS_A_FD;
	fd_attr->nla_len = NLA_HDRLEN + 4;
	memcpy(msg + NLA_HDRLEN, &(uint32_t){ (uint32_t)c->fd }, 4);
	memcpy(msg + NLA_HDRLEN + 4, cert->adopt, (size_t)cert->adopt_len);
	len = NLA_HDRLEN + 4 + (size_t)cert->adopt_len;
	resolving = lp->nl_fd < 0;
	err = resolving ? nl_open(lp, kmsg, sizeof(kmsg)) : 0;
	if (!err) {
		resolving = 0;
		err = nl_exchange(lp, lp->nl_family, KTCPVS_CMD_TLS_ADOPT, KTCPVS_GENL_VERSION, msg,
				  len, kmsg, sizeof(kmsg), NULL);
	}
	if (err) {
		/* A new socket next time: the module may have been reloaded
		 * (its family's id with it); rare enough to be cheap. */
		nl_close(lp);
		lp->counters.refused++;
		if (resolving && err == ENOENT)
			snprintf(why, sizeof(why), "ktcpvs module not loaded: modprobe ktcpvs");
		else if (err == EPERM || err == EACCES)
			snprintf(why, sizeof(why),
				 "permission denied: handing over the TLS connection needs CAP_NET_ADMIN in this network namespace (run as root)");
		else if (*kmsg && strcmp(kmsg, strerror(err)))
			snprintf(why, sizeof(why), "handing over the TLS connection failed: %s: %s",
				 strerror(err), kmsg);
		else
			snprintf(why, sizeof(why), "handing over the TLS connection failed: %s",
				 strerror(err));
		conn_end(lp, c, "refused", why);
		return;
	}
	lp->counters.adopted++;
	lp->counters.resumed += SSL_session_reused(c->ssl) ? 1 : 0;
	conn_end(lp, c, "adopted", "");
}

/* The ClientHello's head is in (SO_RCVLOWAT): a TLS handshake record, so
 * OpenSSL takes the connection on the service's default certificate. */
static int conn_hello(LoopObject *lp, struct tl_conn *c)
{
	unsigned char head[HELLO_PEEK];
	int one = 1;
	ssize_t n = recv(c->fd, head, sizeof(head), MSG_PEEK);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n < 0) {
		conn_fail(lp, c, strerror(errno));
		return -1;
	}
	if (n < HELLO_PEEK) {
		conn_fail(lp, c, "not a TLS ClientHello (the client sent too little)");
		return -1;
	}
	if (head[0] != 22 || head[5] != 1) {
		conn_fail(lp, c, "not a TLS ClientHello");
		return -1;
	}
	setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	c->ssl = SSL_new(c->svc->certs[0].ctx);
	if (!c->ssl || !SSL_set_fd(c->ssl, c->fd) || !SSL_set_ex_data(c->ssl, conn_index, c)) {
		conn_fail_ssl(lp, c, SSL_ERROR_SSL);
		return -1;
	}
	SSL_set_accept_state(c->ssl);
	return 1;
}

static void conn_step(LoopObject *lp, struct tl_conn *c)
{
	int r, err;

	if (!c->ssl && conn_hello(lp, c) <= 0)
		return;
	ERR_clear_error();
	errno = 0;
	r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		conn_handover(lp, c);
		return;
	}
	err = SSL_get_error(c->ssl, r);
	if (err == SSL_ERROR_WANT_READ)
		conn_watch(lp, c, EPOLLIN);
	else if (err == SSL_ERROR_WANT_WRITE)
		conn_watch(lp, c, EPOLLOUT);
	else
		conn_fail_ssl(lp, c, err);
}

static void listener_pause(LoopObject *lp, struct tl_listener *l, int err, double now)
{
	struct epoll_event ev = { .events = 0, .data.ptr = l };

	epoll_ctl(lp->epfd, EPOLL_CTL_MOD, l->fd, &ev);
	l->paused_until = now + PAUSE_S;
	if (now - l->logged_at >= PAUSE_LOG_S && lp->log != Py_None) {
		PyObject *r = PyUnicode_FromFormat("tlsd: accept on service %U: %s (paused for %d ms)",
					 l->svc->name, strerror(err), (int)(PAUSE_S * 1000));
		if (r) {
			PyObject *done = PyObject_CallOneArg(lp->log, r);

			Py_XDECREF(done);
			Py_DECREF(r);
		}
		PyErr_Clear();
		l->logged_at = now;
	}
}

static void listener_accept(LoopObject *lp, struct tl_listener *l)
{
	int i;

	for (i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		struct epoll_event ev = { .events = EPOLLIN };
		struct tl_conn *c;
		unsigned char *a;
		int fd, alen, low = HELLO_PEEK;
		double now;

		fd = accept4(l->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				listener_pause(lp, l, errno, now_s());
				return;
			}
			continue; /* the client went before its accept */
		}
		if (ss.ss_family == AF_INET6) {
			a = (unsigned char *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
			alen = 16;
		} else {
			a = (unsigned char *)&((struct sockaddr_in *)&ss)->sin_addr;
			alen = 4;
		}
		if (lp->n_pending >= lp->max_handshakes ||
		    source_count(lp, a, alen) >= lp->max_per_source) {
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };
			struct tl_conn tmp = { .svc = l->svc }; /* never started: 0 ms */

			inet_ntop(ss.ss_family, a, tmp.peer, sizeof(tmp.peer));
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			close(fd); /* a reset: nothing was read, nothing is owed */
			lp->counters.over_limit++;
			event(lp, "over-limit", &tmp, "");
			continue;
		}
		c = PyMem_Calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			PyErr_Clear();
			listener_pause(lp, l, ENOMEM, now_s());
			return;
		}
		/* Readable once the ClientHello's random is in (or at the end). */
		setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &low, sizeof(low));
		now = now_s();
		c->kind = TL_CONN;
		c->fd = fd;
		c->svc = l->svc;
		Py_INCREF(c->svc);
		memcpy(c->addr, a, (size_t)alen);
		c->addr_len = alen;
		inet_ntop(ss.ss_family, a, c->peer, sizeof(c->peer));
		c->started = now;
		c->deadline = now + lp->timeout;
		if (!source_count(lp, a, alen))
			lp->n_sources++;
		c->src_next = lp->sources[source_hash(a, alen)];
		lp->sources[source_hash(a, alen)] = c;
		c->prev = lp->head.prev;
		c->next = &lp->head;
		lp->head.prev->next = c;
		lp->head.prev = c;
		lp->n_pending++;
		ev.data.ptr = c;
		if (epoll_ctl(lp->epfd, EPOLL_CTL_ADD, fd, &ev))
			conn_fail(lp, c, strerror(errno));
	}
}

/* End the handshakes past their time; the next deadline (or LATEST) */
static double expire(LoopObject *lp, double now, double latest)
{
	size_t i;

	while (lp->head.next != &lp->head) {
		struct tl_conn *c = lp->head.next;

		if (c->deadline > now) {
			latest = c->deadline < latest ? c->deadline : latest;
			break;
		}
		lp->counters.timed_out++;
		conn_end(lp, c, "timeout", "the handshake took too long");
	}
	for (i = 0; i < (size_t)lp->n_listeners; i++) {
		struct tl_listener *l = lp->listeners[i];

		if (!l->paused_until)
			continue;
		if (l->paused_until <= now) {
			struct epoll_event ev = { .events = EPOLLIN, .data.ptr = l };

			l->paused_until = 0;
			epoll_ctl(lp->epfd, EPOLL_CTL_MOD, l->fd, &ev);
		} else if (l->paused_until < latest) {
			latest = l->paused_until;
		}
	}
	return latest;
}

/* ---- the Python types -------------------------------------------------- */

static void service_free_certs(ServiceObject *self)
{
	Py_ssize_t i, j;

	for (i = 0; i < self->n_certs; i++) {
		struct tl_cert *t = &self->certs[i];

		SSL_CTX_free(t->ctx);
		for (j = 0; j < t->n_names; j++)
			PyMem_Free(t->names[j]);
		PyMem_Free(t->names);
		PyMem_Free(t->adopt);
	}
	PyMem_Free(self->certs);
	self->certs = NULL;
	self->n_certs = 0;
}

static void Service_dealloc(ServiceObject *self)
{
	service_free_certs(self);
	Py_XDECREF(self->name);
	Py_XDECREF(self->holds);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static char *copy_str(PyObject *s)
{
	Py_ssize_t n;
	const char *u = PyUnicode_AsUTF8AndSize(s, &n);
	char *out;

	if (!u)
		return NULL;
	out = PyMem_Malloc((size_t)n + 1);
	if (!out) {
		PyErr_NoMemory();
		return NULL;
	}
	memcpy(out, u, (size_t)n + 1);
	return out;
}

static int cert_init(struct tl_cert *t, PyObject *item)
{
	PyObject *ctx_obj, *names;
	unsigned long long ptr;
	const char *adopt;
	Py_ssize_t i, adopt_len;

	if (!PyArg_ParseTuple(item, "OKO!y#", &ctx_obj, &ptr, &PyTuple_Type, &names, &adopt,
			      &adopt_len))
		return -1;
	if (!ptr) {
		PyErr_SetString(PyExc_ValueError, "no SSL_CTX");
		return -1;
	}
	t->names = PyMem_Calloc((size_t)PyTuple_GET_SIZE(names) + 1, sizeof(char *));
	t->adopt = PyMem_Malloc((size_t)adopt_len + 1);
	if (!t->names || !t->adopt) {
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < PyTuple_GET_SIZE(names); i++) {
		t->names[i] = copy_str(PyTuple_GET_ITEM(names, i));
		if (!t->names[i])
			return -1;
		t->n_names++;
	}
	memcpy(t->adopt, adopt, (size_t)adopt_len);
	t->adopt_len = adopt_len;
	t->ctx = (SSL_CTX *)(uintptr_t)ptr;
	SSL_CTX_up_ref(t->ctx);
	SSL_CTX_set_tlsext_servername_callback(t->ctx, sni_cb);
	SSL_CTX_set_keylog_callback(t->ctx, keylog_cb);
	return 0;
}

static int Service_init(ServiceObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "name", "certs", NULL };
	PyObject *name, *certs, *seq;
	Py_ssize_t i, n;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "UO", kwlist, &name, &certs))
		return -1;
	seq = PySequence_Fast(certs, "certs: a sequence");
	if (!seq)
		return -1;
	n = PySequence_Fast_GET_SIZE(seq);
	if (!n) {
		Py_DECREF(seq);
		PyErr_SetString(PyExc_ValueError, "a service needs a certificate");
		return -1;
	}
	service_free_certs(self);
	self->certs = PyMem_Calloc((size_t)n, sizeof(*self->certs));
	if (!self->certs) {
		Py_DECREF(seq);
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < n; i++) {
		self->n_certs = i + 1; /* what cert_init set up is freed on failure */
		if (cert_init(&self->certs[i], PySequence_Fast_GET_ITEM(seq, i))) {
			if (!self->certs[i].ctx)
				self->n_certs = i; /* no reference taken on it */
			Py_DECREF(seq);
			service_free_certs(self);
			return -1;
		}
	}
	Py_DECREF(seq);
	Py_INCREF(name);
	Py_XSETREF(self->name, name);
	Py_INCREF(certs);
	Py_XSETREF(self->holds, certs);
	return 0;
}

static PyObject *Service_get_name(ServiceObject *self, void *closure)
{
	(void)closure;
	return Py_NewRef(self->name ? self->name : Py_None);
}

static PyGetSetDef Service_getset[] = {
	{ "name", (getter)Service_get_name, NULL, "the service's name", NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

static PyTypeObject ServiceType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "l7ctl._tlsloop.Service",
	.tp_basicsize = sizeof(ServiceObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A TLS service's certificates as the handshakes use them",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Service_init,
	.tp_dealloc = (destructor)Service_dealloc,
	.tp_getset = Service_getset,
};

static void loop_close(LoopObject *self)
{
	Py_ssize_t i;

	while (self->head.next && self->head.next != &self->head)
		conn_fail(self, self->head.next, "the daemon stopped");
	for (i = 0; i < self->n_listeners; i++) {
		Py_DECREF(self->listeners[i]->svc);
		PyMem_Free(self->listeners[i]);
	}
	PyMem_Free(self->listeners);
	self->listeners = NULL;
	self->n_listeners = 0;
	if (self->epfd >= 0)
		close(self->epfd);
	self->epfd = -1;
	nl_close(self);
}

static void Loop_dealloc(LoopObject *self)
{
	loop_close(self);
	Py_XDECREF(self->log);
	Py_XDECREF(self->out);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Loop_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	LoopObject *self = (LoopObject *)type->tp_alloc(type, 0);

	(void)args;
	(void)kw;
	if (!self)
		return NULL;
	self->epfd = -1;
	self->nl_fd = -1;
	self->head.next = self->head.prev = &self->head;
	self->wake_kind = TL_WAKE;
	return (PyObject *)self;
}

static int Loop_init(LoopObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "wake_fd",	    "handshake_timeout", "max_handshakes",
				  "max_per_source", "events",		 "log",
				  NULL };
	struct epoll_event ev = { .events = EPOLLIN };
	PyObject *log = Py_None;

	if (self->epfd >= 0) {
		PyErr_SetString(PyExc_RuntimeError, "a Loop is set up once");
		return -1;
	}
	if (!PyArg_ParseTupleAndKeywords(args, kw, "idnnp|O", kwlist, &self->wake_fd,
					 &self->timeout, &self->max_handshakes,
					 &self->max_per_source, &self->events, &log))
		return -1;
	if (self->max_handshakes < 1 || self->max_per_source < 1 || !(self->timeout > 0)) {
		PyErr_SetString(PyExc_ValueError, "the bounds must be positive");
		return -1;
	}
	self->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (self->epfd < 0)
		return PyErr_SetFromErrno(PyExc_OSError), -1;
	ev.data.ptr = &self->wake_kind;
	if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, self->wake_fd, &ev)) {
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	Py_INCREF(log);
	Py_XSETREF(self->log, log);
	return 0;
}

static PyObject *Loop_listen(LoopObject *self, PyObject *args)
{
	struct epoll_event ev = { .events = EPOLLIN };
	struct tl_listener *l, **grown;
	ServiceObject *svc;
	Py_ssize_t i;
	int fd;

	if (!PyArg_ParseTuple(args, "iO!", &fd, &ServiceType, &svc))
		return NULL;
	if (self->epfd < 0)
		return PyErr_Format(PyExc_ValueError, "the loop is closed");
	for (i = 0; i < self->n_listeners; i++)
		if (self->listeners[i]->fd == fd) { /* the same address, a new configuration */
			Py_INCREF(svc);
			Py_SETREF(self->listeners[i]->svc, svc);
			Py_RETURN_NONE;
		}
	grown = PyMem_Realloc(self->listeners, sizeof(*grown) * (size_t)(self->n_listeners + 1));
	if (!grown)
		return PyErr_NoMemory();
	self->listeners = grown;
	l = PyMem_Calloc(1, sizeof(*l));
	if (!l)
		return PyErr_NoMemory();
	l->kind = TL_LISTENER;
	l->fd = fd;
	l->logged_at = -PAUSE_LOG_S;
	ev.data.ptr = l;
	if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev)) {
		PyMem_Free(l);
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	Py_INCREF(svc);
	l->svc = svc;
	self->listeners[self->n_listeners++] = l;
	Py_RETURN_NONE;
}

static PyObject *Loop_unlisten(LoopObject *self, PyObject *args)
{
	Py_ssize_t i;
	int fd;

	if (!PyArg_ParseTuple(args, "i", &fd))
		return NULL;
	for (i = 0; i < self->n_listeners; i++) {
		struct tl_listener *l = self->listeners[i];

		if (l->fd != fd)
			continue;
		epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, NULL);
		Py_DECREF(l->svc);
		PyMem_Free(l);
		self->listeners[i] = self->listeners[--self->n_listeners];
		break;
	}
	Py_RETURN_NONE;
}

static PyObject *take_events(LoopObject *self)
{
	PyObject *out = self->out ? self->out : PyList_New(0);

	self->out = NULL;
	return out;
}

static PyObject *Loop_run(LoopObject *self, PyObject *args)
{
	struct epoll_event evs[64];
	double timeout, until;
	int i, n, woken = 0;

	if (!PyArg_ParseTuple(args, "d", &timeout))
		return NULL;
	if (self->epfd < 0)
		return PyErr_Format(PyExc_ValueError, "the loop is closed");
	if (!self->out) {
		self->out = PyList_New(0);
		if (!self->out)
			return NULL;
	}
	until = now_s() + (timeout > 0 ? timeout : 0);
	for (;;) {
		double now = now_s(), next = expire(self, now, until), wait = next - now;
		int ms = wait > 0 ? (int)(wait * 1000) + 1 : 0;

		if (woken || PyList_GET_SIZE(self->out) || now >= until)
			break;
		Py_BEGIN_ALLOW_THREADS
		n = epoll_wait(self->epfd, evs, 64, ms);
		Py_END_ALLOW_THREADS
		if (n < 0) {
			if (errno != EINTR)
				return PyErr_SetFromErrno(PyExc_OSError);
			break; /* a signal: its Python handler runs once we return */
		}
		for (i = 0; i < n; i++) {
			enum tl_kind *kind = evs[i].data.ptr;

			if (*kind == TL_WAKE)
				woken = 1;
			else if (*kind == TL_LISTENER)
				listener_accept(self, evs[i].data.ptr);
			else
				conn_step(self, evs[i].data.ptr);
		}
	}
	return take_events(self);
}

static PyObject *Loop_close(LoopObject *self, PyObject *unused)
{
	(void)unused;
	if (!self->out)
		self->out = PyList_New(0);
	loop_close(self);
	return take_events(self);
}

static PyObject *Loop_counters(LoopObject *self, PyObject *unused)
{
	const struct tl_counters *c = &self->counters;

	(void)unused;
	return Py_BuildValue("(KKKKKK)", c->adopted, c->resumed, c->failed, c->timed_out,
			     c->over_limit, c->refused);
}

static PyObject *Loop_pending(LoopObject *self, PyObject *unused)
{
	(void)unused;
	return Py_BuildValue("(nn)", self->n_pending, self->n_sources);
}

static PyMethodDef Loop_methods[] = {
	{ "listen", (PyCFunction)Loop_listen, METH_VARARGS,
	  "listen(fd, service): accept on FD for SERVICE (again: its new configuration)" },
	{ "unlisten", (PyCFunction)Loop_unlisten, METH_VARARGS,
	  "unlisten(fd): no longer accept on FD (the caller closes it)" },
	{ "run", (PyCFunction)Loop_run, METH_VARARGS,
	  "run(timeout) -> events: step handshakes until woken, a signal, or TIMEOUT s" },
	{ "close", (PyCFunction)Loop_close, METH_NOARGS,
	  "close() -> events: end every handshake, drop the listeners" },
	{ "counters", (PyCFunction)Loop_counters, METH_NOARGS,
	  "(adopted, resumed, failed, timed_out, over_limit, refused)" },
	{ "pending", (PyCFunction)Loop_pending, METH_NOARGS,
	  "(handshakes in progress, client addresses they come from)" },
	{ NULL, NULL, 0, NULL },
};

static PyTypeObject LoopType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "l7ctl._tlsloop.Loop",
	.tp_basicsize = sizeof(LoopObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "The handshakes of one daemon process, from accept to handover",
	.tp_new = Loop_new,
	.tp_init = (initproc)Loop_init,
	.tp_dealloc = (destructor)Loop_dealloc,
	.tp_methods = Loop_methods,
};

static PyObject *mod_pick(PyObject *mod, PyObject *args)
{
	PyObject *certs, *seq;
	struct tl_cert *t;
	const char *sni;
	Py_ssize_t i, j, n, got = -1;

	(void)mod;
	if (!PyArg_ParseTuple(args, "Oz", &certs, &sni))
		return NULL;
	seq = PySequence_Fast(certs, "certificates: a sequence of name tuples");
	if (!seq)
		return NULL;
	n = PySequence_Fast_GET_SIZE(seq);
	t = PyMem_Calloc((size_t)n + 1, sizeof(*t));
	if (!t) {
		Py_DECREF(seq);
		return PyErr_NoMemory();
	}
	for (i = 0; i < n; i++) {
		PyObject *names = PySequence_Fast(PySequence_Fast_GET_ITEM(seq, i), "names");

		if (!names)
			goto out;
		t[i].n_names = PySequence_Fast_GET_SIZE(names);
		t[i].names = PyMem_Calloc((size_t)t[i].n_names + 1, sizeof(char *));
		for (j = 0; t[i].names && j < t[i].n_names; j++)
			t[i].names[j] = copy_str(PySequence_Fast_GET_ITEM(names, j));
		Py_DECREF(names);
		if (!t[i].names) {
			PyErr_NoMemory();
			goto out;
		}
		for (j = 0; j < t[i].n_names; j++)
			if (!t[i].names[j])
				goto out;
	}
	got = sni ? pick_cert(t, n, sni) : 0;
out:
	for (i = 0; i < n; i++) {
		for (j = 0; t[i].names && j < t[i].n_names; j++)
			PyMem_Free(t[i].names[j]);
		PyMem_Free(t[i].names);
	}
	PyMem_Free(t);
	Py_DECREF(seq);
	return got < 0 ? NULL : PyLong_FromSsize_t(got);
}

static PyObject *mod_tls13_rx_info(PyObject *mod, PyObject *args)
{
	const struct tl_suite *s;
	unsigned char out[RX_INFO_MAX];
	const char *cipher;
	Py_buffer secret;
	int n;

	(void)mod;
	if (!PyArg_ParseTuple(args, "sy*", &cipher, &secret))
		return NULL;
	s = find_suite(cipher);
	n = s && secret.len <= SECRET_MAX ? tls13_info(s, secret.buf, (int)secret.len, out) : -1;
	PyBuffer_Release(&secret);
	if (n < 0)
		return PyErr_Format(PyExc_ValueError, "no kernel TLS blob for %s with this secret",
				    cipher);
	return PyBytes_FromStringAndSize((const char *)out, n);
}

static PyMethodDef module_methods[] = {
	{ "pick", mod_pick, METH_VARARGS,
	  "pick(certificates, sni) -> int: the certificate the handshake uses" },
	{ "tls13_rx_info", mod_tls13_rx_info, METH_VARARGS,
	  "tls13_rx_info(cipher, secret) -> bytes: the kernel's crypto_info" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef tlsloop_module = {
	PyModuleDef_HEAD_INIT, .m_name = "l7ctl._tlsloop",
	.m_doc = "The TLS daemon's handshakes, from accept to handover (docs/tls.md)",
	.m_size = -1,	       .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__tlsloop(void)
{
	PyObject *m;

	if (conn_index < 0)
		conn_index = SSL_get_ex_new_index(0, "l7ctl tlsloop conn", NULL, NULL, NULL);
	if (conn_index < 0)
		return PyErr_Format(PyExc_ImportError, "OpenSSL gave no ex_data index");
	if (PyType_Ready(&ServiceType) < 0 || PyType_Ready(&LoopType) < 0)
		return NULL;
	m = PyModule_Create(&tlsloop_module);
	if (!m)
		return NULL;
	if (PyModule_AddObjectRef(m, "Service", (PyObject *)&ServiceType) ||
	    PyModule_AddObjectRef(m, "Loop", (PyObject *)&LoopType)) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
