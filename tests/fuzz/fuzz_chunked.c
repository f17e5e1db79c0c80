// SPDX-License-Identifier: GPL-2.0
/*
 * libFuzzer harness: the chunked body machine alone (size lines,
 * extensions, data, CRLF, trailer section), on a stream of successive
 * chunked bodies, fed whole, one byte at a time and at random cuts; and
 * at random cuts with chunk data passed by kt_http_body_skip() unseen, as
 * the kernel's zero-copy relay does.  Every way must agree.
 */
#include "fuzz_common.h"

struct fz_body {
	int rc;
	uint16_t status;
	const char *reason;
	size_t end;
	uint64_t decoded;
};

static int fz_bodies(const uint8_t *data, size_t size, struct fz_feed f,
		     const struct kt_http_msg *m, struct fz_body *out, int max,
		     int skip)
{
	struct kt_http_body b;
	size_t pos = 0, start, used;
	uint8_t *copy;
	int n = 0, rc;

	f.total = size;
	f.avail = 0;
	fz_more(&f);
	while (pos < size && n < max) {
		struct fz_body *r = &out[n++];

		start = pos;
		kt_http_body_init(&b, m);
		for (;;) {
			uint64_t op = kt_http_body_opaque(&b);

			if (skip && op && f.avail > pos) {
				if (op > f.avail - pos)
					op = f.avail - pos;
				rc = kt_http_body_skip(&b, op);
				FZ_ASSERT(rc != KT_HTTP_ERROR);
				pos += op;
				if (rc == KT_HTTP_DONE)
					break;
				continue;
			}
			copy = fz_copy(data + pos, f.avail - pos);
			rc = kt_http_body_feed(&b, copy, f.avail - pos, &used);
			free(copy);
			FZ_ASSERT(used <= f.avail - pos);
			pos += used;
			if (rc != KT_HTTP_AGAIN)
				break;
			if (!fz_more(&f)) {
				rc = kt_http_body_eof(&b);
				break;
			}
		}
		r->rc = rc;
		r->end = pos;
		r->decoded = b.decoded;
		if (rc == KT_HTTP_ERROR) {
			r->status = b.status;
			r->reason = b.reason;
			return n;
		}
		/* "0" CRLF CRLF at least; ends with CRLF; data fits */
		FZ_ASSERT(pos - start >= 5);
		FZ_ASSERT(data[pos - 2] == '\r' && data[pos - 1] == '\n');
		FZ_ASSERT(b.decoded + 5 <= pos - start);
		FZ_ASSERT(b.wire == pos - start);
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz_body a[FZ_MAX_MSGS], b[FZ_MAX_MSGS];
	struct kt_http_limits lim;
	struct kt_http_msg m;
	struct fz_feed f = { 0 };
	int na, nb, i, pass;
	uint8_t cfg;

	if (size < 1)
		return 0;
	cfg = data[0];
	data++;
	size--;
	fz_limits(cfg, &lim);
	if (cfg & 0x80)
		kt_http_resp_init(&m, &lim, NULL, 0, KT_HTTP_M_GET);
	else
		kt_http_req_init(&m, &lim, NULL, 0, NULL, 0);
	m.framing = KT_HTTP_FR_CHUNKED;

	f.step = size ? size : 1;
	na = fz_bodies(data, size, f, &m, a, FZ_MAX_MSGS, 0);
	for (pass = 0; pass < 3; pass++) {
		f.step = pass ? 0 : 1;
		f.seed = (uint32_t)size ^ cfg;
		nb = fz_bodies(data, size, f, &m, b, FZ_MAX_MSGS, pass == 2);
		FZ_ASSERT(na == nb);
		for (i = 0; i < na; i++) {
			FZ_ASSERT(a[i].rc == b[i].rc);
			FZ_ASSERT(a[i].status == b[i].status);
			FZ_ASSERT(a[i].reason == b[i].reason);
			FZ_ASSERT(a[i].end == b[i].end);
			FZ_ASSERT(a[i].decoded == b[i].decoded);
		}
	}
	return 0;
}
