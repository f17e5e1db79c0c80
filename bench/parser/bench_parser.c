// SPDX-License-Identifier: GPL-2.0
/*
 * bench_parser - request-head parsing: ktcpvs (kmod/core/http.c) against
 * picohttpparser (phr_parse_request, Debian's libh2o-evloop) and
 * http-parser (Debian's libhttp-parser), one run, same corpus.
 *
 *   bench_parser time [iterations]       JSON with ns/request and bytes/s
 *   bench_parser list                    parsers and samples
 *   bench_parser callgrind P S iters     parser P on sample S, only the
 *                                        loop collected (run it under
 *                                        valgrind --collect-atstart=no)
 *
 * Every parser is handed each whole head once per iteration and must
 * accept it.  ktcpvs does its full work: validation, field records,
 * Host/Content-Length/Connection semantics, normalized path and host.
 * pico records method/path/fields; http-parser gets callbacks that record
 * URL and field positions, as a real user would.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <http_parser.h>
#include <valgrind/callgrind.h>

#include "http.h"

/* picohttpparser's API (libh2o-evloop exports it without a header). */
struct phr_header {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};
int phr_parse_request(const char *buf, size_t len, const char **method,
		      size_t *method_len, const char **path, size_t *path_len,
		      int *minor_version, struct phr_header *headers,
		      size_t *num_headers, size_t last_len);

struct sample {
	const char *name;
	const char *text;
	size_t len;
	int fields;
};

static struct sample corpus[] = {
	{ "browser-get",
	  "GET /images/products/2024/summer-collection/hero-banner-large.webp?v=3&w=1920 HTTP/1.1\r\n"
	  "Host: www.example-shop.com\r\n"
	  "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n"
	  "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8\r\n"
	  "Accept-Encoding: gzip, deflate, br, zstd\r\n"
	  "Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n"
	  "Referer: https://www.example-shop.com/collections/summer\r\n"
	  "Connection: keep-alive\r\n"
	  "Cookie: session_id=a3f8c9e2b7d14f6a9e0c; cart=17; consent=granted; theme=dark; _ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000\r\n"
	  "Sec-Fetch-Dest: image\r\n"
	  "Sec-Fetch-Mode: no-cors\r\n"
	  "Sec-Fetch-Site: same-origin\r\n"
	  "\r\n", 0, 11 },
	{ "curl-get",
	  "GET /index.html HTTP/1.1\r\n"
	  "Host: example.com\r\n"
	  "User-Agent: curl/7.88.1\r\n"
	  "Accept: */*\r\n"
	  "\r\n", 0, 3 },
	{ "api-post",
	  "POST /api/v2/orders HTTP/1.1\r\n"
	  "Host: api.example.com\r\n"
	  "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U\r\n"
	  "Content-Type: application/json\r\n"
	  "Content-Length: 348\r\n"
	  "Accept: application/json\r\n"
	  "X-Request-Id: 7f3c2a10-9b4e-4d61-8a2f-0c5d9e8b1a23\r\n"
	  "\r\n", 0, 6 },
	{ "cgi-get",
	  "GET /cgi-bin/search.cgi?q=kernel+content+switch&page=2&sort=date HTTP/1.1\r\n"
	  "Host: www.example.org\r\n"
	  "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
	  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
	  "Accept-Language: en-US,en;q=0.5\r\n"
	  "Accept-Encoding: gzip, deflate, br\r\n"
	  "Connection: keep-alive\r\n"
	  "Upgrade-Insecure-Requests: 1\r\n"
	  "\r\n", 0, 7 },
};

#define NSAMPLES (sizeof(corpus) / sizeof(corpus[0]))

static volatile size_t sink;

/* ---- ktcpvs ---- */

static struct kt_http_field kt_fields[100];
static u8 kt_out[8192 + KT_HTTP_HOST_MAX + 1];

static int parse_kt(const struct sample *s)
{
	struct kt_http_msg m;

	kt_http_req_init(&m, NULL, kt_fields, 100, kt_out, sizeof(kt_out));
	if (kt_http_parse(&m, (const u8 *)s->text, s->len) != KT_HTTP_DONE)
		return -1;
	sink += m.nfields + m.path_len + m.host_len;
	return (int)m.nfields;
}

/* ---- picohttpparser ---- */

static int parse_pico(const struct sample *s)
{
	struct phr_header h[100];
	size_t nh = 100, ml, pl;
	const char *meth, *path;
	int minor, rc;

	rc = phr_parse_request(s->text, s->len, &meth, &ml, &path, &pl, &minor,
			       h, &nh, 0);
	if (rc != (int)s->len)
		return -1;
	sink += nh + pl;
	return (int)nh;
}

/* ---- http-parser ---- */

struct hp_ctx {
	const char *url;
	size_t url_len;
	int fields;
	const char *name[100], *value[100];
	size_t name_len[100], value_len[100];
	int done;
};

static int hp_url(http_parser *p, const char *at, size_t n)
{
	struct hp_ctx *c = p->data;

	c->url = at;
	c->url_len = n;
	return 0;
}

static int hp_field(http_parser *p, const char *at, size_t n)
{
	struct hp_ctx *c = p->data;

	if (c->fields >= 100)
		return 1;
	c->name[c->fields] = at;
	c->name_len[c->fields] = n;
	return 0;
}

static int hp_value(http_parser *p, const char *at, size_t n)
{
	struct hp_ctx *c = p->data;

	c->value[c->fields] = at;
	c->value_len[c->fields++] = n;
	return 0;
}

static int hp_headers_complete(http_parser *p)
{
	((struct hp_ctx *)p->data)->done = 1;
	return 0;
}

static const http_parser_settings hp_settings = {
	.on_url = hp_url,
	.on_header_field = hp_field,
	.on_header_value = hp_value,
	.on_headers_complete = hp_headers_complete,
};

static int parse_hp(const struct sample *s)
{
	struct hp_ctx c;
	http_parser p;

	c.fields = 0;
	c.done = 0;
	http_parser_init(&p, HTTP_REQUEST);
	p.data = &c;
	http_parser_execute(&p, &hp_settings, s->text, s->len);
	if (!c.done || HTTP_PARSER_ERRNO(&p) != HPE_OK)
		return -1;
	sink += c.fields + c.url_len;
	return c.fields;
}

struct parser {
	const char *name;
	int (*parse)(const struct sample *s);
};

static const struct parser parsers[] = {
	{ "ktcpvs", parse_kt },
	{ "picohttpparser", parse_pico },
	{ "http-parser", parse_hp },
};

#define NPARSERS (sizeof(parsers) / sizeof(parsers[0]))

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void check_all(void)
{
	size_t i, j;

	for (i = 0; i < NSAMPLES; i++) {
		corpus[i].len = strlen(corpus[i].text);
		for (j = 0; j < NPARSERS; j++) {
			int n = parsers[j].parse(&corpus[i]);

			if (n != corpus[i].fields) {
				fprintf(stderr, "%s: %s: got %d fields, want %d\n",
					parsers[j].name, corpus[i].name, n,
					corpus[i].fields);
				exit(1);
			}
		}
	}
}

/* Best of 5 runs of iters x sample, in ns per request. */
static double time_one(const struct parser *p, const struct sample *s,
		       long iters)
{
	double best = 1e30, t;
	long i;
	int r;

	for (r = 0; r < 5; r++) {
		t = now_ns();
		for (i = 0; i < iters; i++)
			p->parse(s);
		t = (now_ns() - t) / iters;
		if (t < best)
			best = t;
	}
	return best;
}

static int do_time(long iters)
{
	size_t i, j;

	printf("{\n  \"iterations\": %ld,\n  \"samples\": [\n", iters);
	for (i = 0; i < NSAMPLES; i++)
		printf("    {\"name\": \"%s\", \"bytes\": %zu, \"fields\": %d}%s\n",
		       corpus[i].name, corpus[i].len, corpus[i].fields,
		       i + 1 < NSAMPLES ? "," : "");
	printf("  ],\n  \"time\": {\n");
	for (j = 0; j < NPARSERS; j++) {
		double total_ns = 0, total_bytes = 0;

		printf("    \"%s\": {\n", parsers[j].name);
		for (i = 0; i < NSAMPLES; i++) {
			double ns = time_one(&parsers[j], &corpus[i], iters);

			total_ns += ns;
			total_bytes += corpus[i].len;
			printf("      \"%s\": {\"ns_per_request\": %.1f, "
			       "\"bytes_per_second\": %.0f},\n",
			       corpus[i].name, ns, corpus[i].len / ns * 1e9);
		}
		printf("      \"corpus\": {\"ns_per_request\": %.1f, "
		       "\"bytes_per_second\": %.0f}\n    }%s\n",
		       total_ns / NSAMPLES, total_bytes / total_ns * 1e9,
		       j + 1 < NPARSERS ? "," : "");
	}
	printf("  }\n}\n");
	return 0;
}

/* Collect only the parse loop of parser NAME over sample SAMPLE. */
static int do_callgrind(const char *name, const char *sample, long iters)
{
	size_t i, j;
	long k;

	for (j = 0; j < NPARSERS; j++) {
		if (strcmp(parsers[j].name, name))
			continue;
		for (i = 0; i < NSAMPLES; i++) {
			if (strcmp(corpus[i].name, sample))
				continue;
			CALLGRIND_TOGGLE_COLLECT;
			for (k = 0; k < iters; k++)
				parsers[j].parse(&corpus[i]);
			CALLGRIND_TOGGLE_COLLECT;
			return 0;
		}
	}
	fprintf(stderr, "unknown parser %s\n", name);
	return 2;
}

int main(int argc, char **argv)
{
	check_all();
	if (argc >= 2 && !strcmp(argv[1], "time"))
		return do_time(argc > 2 ? atol(argv[2]) : 200000);
	if (argc == 5 && !strcmp(argv[1], "callgrind"))
		return do_callgrind(argv[2], argv[3], atol(argv[4]));
	if (argc == 2 && !strcmp(argv[1], "list")) {
		for (size_t i = 0; i < NPARSERS; i++)
			printf("parser %s\n", parsers[i].name);
		for (size_t i = 0; i < NSAMPLES; i++)
			printf("sample %s %zu\n", corpus[i].name,
			       corpus[i].len);
		return 0;
	}
	fprintf(stderr, "usage: %s time [iters] | list | "
		"callgrind PARSER SAMPLE iters\n", argv[0]);
	return 2;
}
