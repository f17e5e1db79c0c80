/* SPDX-License-Identifier: GPL-2.0 */
/*
 * match.h - the rule matcher of the pure-C core.
 *
 * l7ctl compiles a .rules file into one binary blob (docs/rules-format.md):
 * pools, servers, services (listen address, options) and, per service, the
 * rule table: predicates, per-field automata, rule formulas.  The blob comes
 * from user space and is untrusted:
 *
 *   1. kt_rules_validate() checks it completely (every offset, index, count,
 *      list, automaton transition, formula) and fills a struct kt_rules view;
 *      a blob that fails is refused and never walked.
 *   2. kt_match() then matches a request view against one service's rules;
 *      it assumes a validated table and cannot fail.
 *
 * Cost of kt_match(): one hash lookup and at most two DFA walks (linear in
 * the field's length, no backtracking) per request field the rules look at,
 * one hash lookup per header / cookie / query parameter; then rule
 * selection, which evaluates only rules whose trigger predicates are true
 * (plus rules that cannot be triggered, e.g. `not ...` or the default) in
 * rule order, stopping at the first match.  It does not scan all rules.
 *
 * No allocation, no recursion, no floating point.  The caller provides a
 * scratch area of kt_match_scratch_words() u32 words, zeroed once with
 * kt_match_scratch_init(); kt_match() leaves it zeroed again, so it can be
 * reused (for example one per CPU, with preemption disabled while matching).
 * A validated table is read-only: any number of kt_match() calls may run on
 * it concurrently, each with its own scratch.
 */
#ifndef KT_MATCH_H
#define KT_MATCH_H

#include "kt_compat.h"

#define KT_RULES_MAGIC		0x4c52544bU	/* "KTRL" little-endian */
#define KT_RULES_VERSION_MAJOR	3
#define KT_RULES_VERSION_MINOR	0
#define KT_RULES_MAX_SIZE	(8U << 20)	/* bytes */
#define KT_RULES_MAX_STATES	(1U << 20)	/* per DFA */
#define KT_RULES_NONE		0xffffffffU

/*
 * Counts a configuration may have: they bound what the kernel allocates
 * for it at commit (per-service, per-pool and per-server state).
 */
#define KT_RULES_MAX_SERVICES	1024
#define KT_RULES_MAX_POOLS	16384
#define KT_RULES_MAX_SERVERS	65536

/* Largest values of the service options (0 always means the default). */
#define KT_RULES_MAX_REQUEST_LINE	65536		/* bytes */
#define KT_RULES_MAX_HEADER_SIZE	(1U << 20)	/* bytes */
#define KT_RULES_MAX_HEADERS		1000		/* fields */
#define KT_RULES_MAX_CONNS		1000000		/* per service, per source */
#define KT_RULES_MAX_SOURCE_RATE	1000000		/* requests/s per source */
#define KT_RULES_MAX_BACKLOG		65535
#define KT_RULES_MAX_TIMEOUT_MS		(24U * 3600 * 1000)	/* 24 h */
/* Largest namespace-wide connection limit (header word 5). */
#define KT_RULES_MAX_NS_CONNS		10000000

/* Actions */
#define KT_ACTION_NONE		0	/* no rule matched: answer 404 */
#define KT_ACTION_ROUTE		1
#define KT_ACTION_BLOCK		2
#define KT_ACTION_REDIRECT	3
#define KT_ACTION_ANSWER	4	/* the switch answers status + body itself */

/* An answer rule's status (not 101) and largest body. */
#define KT_RULES_ANSWER_MIN	100
#define KT_RULES_ANSWER_MAX	599
#define KT_RULES_MAX_ANSWER_BODY	4096	/* bytes */

/*
 * A pool's active health check (struct kt_rules_check): none, a TCP
 * connect, or an HTTP request whose answer status must be in expect_lo..hi.
 * Bounds the validator enforces (HAProxy's meanings: a check every
 * interval, failed after timeout; rise successes in a row bring a server
 * up, fall failures in a row take it down).
 */
#define KT_CHECK_NONE		0
#define KT_CHECK_TCP		1
#define KT_CHECK_HTTP		2
#define KT_RULES_CHECK_INTERVAL_MIN	100		/* ms */
#define KT_RULES_CHECK_INTERVAL_MAX	(3600U * 1000)	/* 1 h */
#define KT_RULES_CHECK_TIMEOUT_MIN	10		/* ms, and <= interval */
#define KT_RULES_CHECK_TIMEOUT_MAX	(60U * 1000)	/* 60 s */
#define KT_RULES_CHECK_COUNT_MAX	100		/* rise, fall: 1..100 */
#define KT_RULES_CHECK_REQUEST_MAX	1024	/* "METHOD /path" bytes */
#define KT_RULES_CHECK_HOST_MAX		255	/* bytes */

/*
 * A pool's persistence (struct kt_rules_persist): none; a cookie the switch
 * sets on answers (NAME=<16 hex digits of the server's id>) and follows on
 * later requests; or client address -> server for source_timeout_ms.
 */
#define KT_PERSIST_NONE		0
#define KT_PERSIST_COOKIE	1
#define KT_PERSIST_SOURCE	2
#define KT_RULES_COOKIE_MAX		64	/* bytes of a cookie name */
#define KT_RULES_PERSIST_TIMEOUT_MIN	1000			/* ms */
#define KT_RULES_PERSIST_TIMEOUT_MAX	(24U * 3600 * 1000)	/* 24 h */

/* A service's access log: off, every request, or one request in log_sample. */
#define KT_LOG_OFF		0
#define KT_LOG_ON		1
#define KT_LOG_SAMPLE		2
#define KT_RULES_LOG_SAMPLE_MIN	2
#define KT_RULES_LOG_SAMPLE_MAX	65535

/* Pool schedulers, in this order (index in the blob). */
enum kt_rules_sched {
	KT_SCHED_RR, KT_SCHED_WRR, KT_SCHED_LC, KT_SCHED_WLC,
	KT_SCHED_LBLC, KT_SCHED_LBLCR, KT_SCHED_DH, KT_SCHED_SH,
	KT_SCHED_COUNT
};

/* Server states */
#define KT_SERVER_UP		0
#define KT_SERVER_DRAIN		1
#define KT_SERVER_DOWN		2

/*
 * Service flags.  X-Forwarded-For: APPEND keeps the client's own fields and
 * adds one with the client's address; REPLACE removes every field the
 * client sent and adds that one; neither: nothing added.  Never both.
 */
#define KT_SERVICE_XFF_APPEND	0x1
#define KT_SERVICE_XFF_REPLACE	0x2
#define KT_SERVICE_XFF_MASK	(KT_SERVICE_XFF_APPEND | KT_SERVICE_XFF_REPLACE)
/*
 * No HTTP at all: every byte of a connection is relayed to a server of the
 * service's unconditional route, unparsed -- the cheapest relay the module
 * can do, the floor `make bench` measures the others against.
 */
#define KT_SERVICE_RAW		0x4
/*
 * HTTPS (docs/tls.md): the module opens no listener for the service; its
 * connections are handed over by the TLS daemon once their handshake is
 * done (KTCPVS_CMD_TLS_ADOPT), and only such a service takes them.
 */
#define KT_SERVICE_TLS		0x8
/*
 * "X-Forwarded-Proto: https" towards the servers, in place of any such
 * field the client sent.  Only on a TLS service, never a raw one.
 */
#define KT_SERVICE_XFP		0x10
/* Every flag a table may carry, and the combinations kt_rules_v_service refuses. */
#define KT_SERVICE_FLAGS	(KT_SERVICE_XFF_MASK | KT_SERVICE_RAW | \
				 KT_SERVICE_TLS | KT_SERVICE_XFP)
#define KT_SERVICE_XFF		KT_SERVICE_XFF_APPEND	/* old name */

/*
 * Service limits and timeouts, index into the arrays of struct
 * kt_rules_service_info; 0 = the module's default (for the connection
 * and rate limits: unlimited).
 */
#define KT_LIMIT_REQUEST_LINE		0	/* bytes: 414 */
#define KT_LIMIT_HEADER_SIZE		1	/* bytes of the head: 431 */
#define KT_LIMIT_HEADERS		2	/* header fields: 431 */
#define KT_LIMIT_CONNECTIONS		3	/* client connections at once */
#define KT_LIMIT_SOURCE_CONNECTIONS	4	/* ... per client address */
#define KT_LIMIT_SOURCE_RATE		5	/* requests/s per client address */
#define KT_LIMIT_BACKLOG		6	/* listen backlog */
#define KT_LIMIT_COUNT			7
#define KT_TIMEOUT_HEADER	0
#define KT_TIMEOUT_IDLE		1
#define KT_TIMEOUT_CONNECT	2
#define KT_TIMEOUT_BACKEND	3
#define KT_TIMEOUT_COUNT	4

/* A validated blob.  Pointers into the caller's blob, which must stay
 * alive (and unmodified) as long as this view is used. */
struct kt_rules {
	const u32 *w;		/* the blob as u32 words */
	u32 nwords_total;
	const u8 *str;		/* string bytes */
	u32 str_len;
	const u32 *pool, *server, *service, *rule, *pred, *field, *hash, *dfa;
	const u32 *words;	/* the heap: lists, code, rows, ... */
	u32 npools, nservers, nservices, nrules, npreds, nfields, nhashes;
	u32 ndfas, nwords;
	u32 scratch_words;	/* kt_match_scratch_words() */
	u32 max_conns;		/* namespace-wide client connections, 0 = default */
};

/* Address family of a request's client or a listen/server address */
#define KT_MATCH_AF_NONE	0
#define KT_MATCH_AF_INET	4
#define KT_MATCH_AF_INET6	6

struct kt_match_slice {
	const u8 *ptr;
	u32 len;
};

struct kt_match_header {
	struct kt_match_slice name, value;	/* value without OWS */
};

/*
 * The request as the matcher sees it; filled by the caller from its parser.
 * host: lower-cased (the matcher folds again, so it need not be), no port;
 * path: the normalized path (RFC 3986 6), no query; query: raw, without '?'.
 * client: family KT_MATCH_AF_INET uses addr[0..3], INET6 all 16 bytes
 * (IPv4-mapped IPv6 addresses are matched as IPv4).
 */
struct kt_match_req {
	struct kt_match_slice method, host, path, query;
	const struct kt_match_header *headers;
	u32 nheaders;
	u8 family;
	u8 addr[16];
};

struct kt_match_result {
	u32 rule;		/* index in the service, KT_RULES_NONE: none */
	u32 action;		/* KT_ACTION_* */
	u32 pool;		/* KT_ACTION_ROUTE: index of the pool */
	u32 status;		/* BLOCK, REDIRECT, ANSWER: HTTP status */
	struct kt_match_slice location;	/* REDIRECT (else length 0) */
	u32 line;		/* source line of the rule (for logs/stats) */
	struct kt_match_slice body;	/* ANSWER: the answer's body, may be
					 * empty (else length 0) */
};

/* Read-only views of the configuration, for setting services up. */
struct kt_rules_service_info {
	struct kt_match_slice name;
	u8 family;
	u8 addr[16];
	u16 port;
	u32 flags;		/* KT_SERVICE_* */
	u32 limits[KT_LIMIT_COUNT];	/* KT_LIMIT_*, 0 = default */
	u32 timeouts_ms[KT_TIMEOUT_COUNT];	/* KT_TIMEOUT_*, 0 = default */
	u32 nrules;
	u32 log_mode;		/* KT_LOG_* */
	u32 log_sample;		/* KT_LOG_SAMPLE: log one request in this many */
};

/* A pool's health check; every field 0 (slices empty) with KT_CHECK_NONE. */
struct kt_rules_check {
	u32 kind;		/* KT_CHECK_* */
	u32 interval_ms;	/* between checks of one server */
	u32 timeout_ms;		/* a check not done by then failed */
	u32 rise;		/* successes in a row that bring a server up */
	u32 fall;		/* failures in a row that take it down */
	struct kt_match_slice request;	/* HTTP: "METHOD /path" (one SP,
					 * visible ASCII) */
	struct kt_match_slice host;	/* HTTP: the Host to send; empty: none
					 * given (send the server's address) */
	u32 expect_lo, expect_hi;	/* HTTP: statuses that pass */
};

/* A pool's persistence; every field 0 (slice empty) with KT_PERSIST_NONE. */
struct kt_rules_persist {
	u32 kind;		/* KT_PERSIST_* */
	struct kt_match_slice cookie;	/* COOKIE: its name, an RFC 6265 token */
	u32 source_timeout_ms;	/* SOURCE: how long an address sticks */
};

struct kt_rules_pool_info {
	struct kt_match_slice name;
	u32 scheduler;		/* enum kt_rules_sched */
	u32 first_server, nservers;	/* into kt_rules_server() */
	struct kt_rules_check check;
	struct kt_rules_persist persist;
};

struct kt_rules_server_info {
	u8 family;
	u8 addr[16];
	u16 port;
	u16 weight;
	u8 state;		/* KT_SERVER_* */
	/*
	 * The server's persistence identity, never 0: the same on every
	 * director that applies the same file (the compiler derives it from
	 * the pool's name and the server's `id`, or its address and port).
	 * A persistence cookie's value is its 16 lower-case hex digits.
	 */
	u64 id;
};

/*
 * Validate blob[0..len) and fill *r.  The blob must be 4-byte aligned.
 * Returns 0, or -1 with *why (if why is not NULL) set to a static string
 * naming the first problem found (suitable for a netlink extack message).
 * Cost: linear in len (every reference is checked once).
 */
int kt_rules_validate(struct kt_rules *r, const void *blob, size_t len,
		      const char **why);

u32 kt_rules_nservices(const struct kt_rules *r);
u32 kt_rules_npools(const struct kt_rules *r);
/* The namespace-wide limit on client connections; 0 = the module's default. */
u32 kt_rules_max_conns(const struct kt_rules *r);
void kt_rules_service(const struct kt_rules *r, u32 i,
		      struct kt_rules_service_info *out);
void kt_rules_pool(const struct kt_rules *r, u32 i,
		   struct kt_rules_pool_info *out);
void kt_rules_server(const struct kt_rules *r, u32 i,
		     struct kt_rules_server_info *out);

/* Scratch: the largest need over all services of a validated table. */
u32 kt_match_scratch_words(const struct kt_rules *r);
void kt_match_scratch_init(u32 *scratch, u32 nwords);

/*
 * Match req against the rules of service svc (< kt_rules_nservices()).
 * scratch: kt_match_scratch_words(r) zeroed words; returned zeroed.
 * Returns the rule index (== res->rule) or KT_RULES_NONE.
 */
u32 kt_match(const struct kt_rules *r, u32 svc,
	     const struct kt_match_req *req, u32 *scratch,
	     struct kt_match_result *res);

/*
 * kt_match() that also reports which predicates held (for `l7ctl route`):
 * up to cap predicate ids go to preds[], their number to *npreds.
 */
u32 kt_match_trace(const struct kt_rules *r, u32 svc,
		   const struct kt_match_req *req, u32 *scratch,
		   struct kt_match_result *res, u32 *preds, u32 cap,
		   u32 *npreds);

#endif /* KT_MATCH_H */
