/* SPDX-License-Identifier: Apache-2.0 */
/* test_json.c - the JSON writer and reply reader. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

static int failed;
static int checks;

#define CHECK(cond) do { \
	checks++; \
	if (!(cond)) { \
		printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
		failed++; \
	} \
} while (0)

/* A growable memory sink for jsink, counting flushes. */
struct mem {
	char *data;
	size_t len, cap;
	int flushes;
	int fail_after;		/* fail the Nth flush (0: never) */
};

static int mem_flush(void *ctx, const char *data, size_t len)
{
	struct mem *m = ctx;

	m->flushes++;
	if (m->fail_after && m->flushes >= m->fail_after)
		return -1;
	if (m->len + len + 1 > m->cap) {
		m->cap = (m->len + len + 1) * 2;
		m->data = realloc(m->data, m->cap);
		if (!m->data)
			abort();
	}
	memcpy(m->data + m->len, data, len);
	m->len += len;
	m->data[m->len] = '\0';
	return 0;
}

static char *escape(const char *s)
{
	struct mem m = { 0 };
	struct jsink js;

	jsink_init(&js, mem_flush, &m);
	jsink_str(&js, s);
	if (jsink_finish(&js) != 0)
		abort();
	return m.data;
}

static void test_escape(void)
{
	char *e;

	e = escape("plain");
	CHECK(strcmp(e, "\"plain\"") == 0);
	free(e);
	e = escape("a\"b\\c/d");
	CHECK(strcmp(e, "\"a\\\"b\\\\c/d\"") == 0);
	free(e);
	e = escape("\n\r\t\b\f\x01\x1f");
	CHECK(strcmp(e, "\"\\n\\r\\t\\b\\f\\u0001\\u001f\"") == 0);
	free(e);
	e = escape("caf\xc3\xa9 \xf0\x9f\x98\x80 \xff\x7f");	/* UTF-8, invalid, DEL: as is */
	CHECK(strcmp(e, "\"caf\xc3\xa9 \xf0\x9f\x98\x80 \xff\x7f\"") == 0);
	free(e);
	e = escape("");
	CHECK(strcmp(e, "\"\"") == 0);
	free(e);
}

/* A string far larger than the sink buffer streams through it intact. */
static void test_streaming(void)
{
	size_t n = 300 * 1024;
	char *big = malloc(n + 1);
	struct mem m = { 0 };
	struct jsink js;
	size_t quotes = 0;

	for (size_t i = 0; i < n; i++)
		big[i] = (i % 7 == 0) ? '"' : (char)('a' + i % 26);
	big[n] = '\0';
	for (size_t i = 0; i < n; i++)
		quotes += big[i] == '"';

	jsink_init(&js, mem_flush, &m);
	jsink_lit(&js, "{\"argv\":[");
	jsink_str(&js, big);
	jsink_lit(&js, "],\"n\":");
	jsink_int(&js, -42);
	jsink_lit(&js, "}");
	CHECK(jsink_finish(&js) == 0);
	CHECK(m.flushes > 30);
	CHECK(m.len == strlen("{\"argv\":[") + n + quotes + 2 + strlen("],\"n\":-42}"));
	CHECK(strcmp(m.data + m.len - 10, "],\"n\":-42}") == 0);
	free(m.data);

	/* a failing flush is remembered and reported once at the end */
	memset(&m, 0, sizeof(m));
	m.fail_after = 2;
	jsink_init(&js, mem_flush, &m);
	jsink_str(&js, big);
	CHECK(jsink_finish(&js) == -1);
	CHECK(m.flushes == 2);		/* stopped writing after the failure */
	free(m.data);
	free(big);
}

/* Parse a copy of text (jreply_parse needs one spare writable byte). */
static int parse(const char *text, struct jreply *r, char **keep)
{
	size_t len = strlen(text);
	char *buf = malloc(len + 1);
	int rc;

	memcpy(buf, text, len);
	rc = jreply_parse(buf, len, r);
	*keep = buf;			/* the strings in r point into it */
	return rc;
}

static void test_reply(void)
{
	struct jreply r;
	char *buf;

	CHECK(parse("{\"ok\":true,\"call\":7,\"grant\":2147483648,\"category\":\"test\","
		    "\"priority\":\"normal\",\"notes\":\"asked 4G, granted 2G (tools budget)\"}",
		    &r, &buf) == 0);
	CHECK(r.has_ok && r.ok);
	CHECK(r.has_call && r.call == 7);
	CHECK(r.has_grant && r.grant == 2147483648LL);
	CHECK(r.notes && strcmp(r.notes, "asked 4G, granted 2G (tools budget)") == 0);
	CHECK(!r.notice && !r.error);
	free(buf);

	/* admission's interim line */
	CHECK(parse("{\"ok\":true,\"wait_ms\":32000}", &r, &buf) == 0);
	CHECK(r.has_ok && r.ok && r.has_wait && r.wait_ms == 32000 && !r.has_call);
	free(buf);

	CHECK(parse(" {\"ok\":false,\"error\":\"not in \\\"this\\\" container\\n\"} \r\n",
		    &r, &buf) == 0);
	CHECK(r.has_ok && !r.ok);
	CHECK(r.error && strcmp(r.error, "not in \"this\" container\n") == 0);
	CHECK(!r.has_call);
	free(buf);

	/* nested values of other members are skipped; the last duplicate wins */
	CHECK(parse("{\"x\":{\"call\":99,\"a\":[1,2.5e3,-0,{\"b\":[]},null,true,false,\"s\"]},"
		    "\"call\":1,\"call\":3,\"y\":[],\"z\":{}}", &r, &buf) == 0);
	CHECK(r.has_call && r.call == 3);
	CHECK(!r.has_ok);
	free(buf);

	/* escapes: \u, surrogate pairs, lone surrogates, all simple escapes */
	CHECK(parse("{\"notice\":\"caf\\u00e9 \\ud83d\\ude00 \\udc00 \\ud800x \\/\\b\\f\\t\"}",
		    &r, &buf) == 0);
	CHECK(r.notice && strcmp(r.notice, "caf\xc3\xa9 \xf0\x9f\x98\x80 \xef\xbf\xbd "
				 "\xef\xbf\xbdx /\b\f\t") == 0);
	free(buf);

	/* raw UTF-8 passes through */
	CHECK(parse("{\"notes\":\"\xe2\x9c\x93 ok\"}", &r, &buf) == 0);
	CHECK(r.notes && strcmp(r.notes, "\xe2\x9c\x93 ok") == 0);
	free(buf);

	/* numbers that are not integers, or too big, are not a call number */
	CHECK(parse("{\"ok\":true,\"call\":7.5,\"grant\":1e9}", &r, &buf) == 0);
	CHECK(!r.has_call && !r.has_grant);
	free(buf);
	CHECK(parse("{\"call\":99999999999999999999}", &r, &buf) == 0);
	CHECK(!r.has_call);
	free(buf);
	CHECK(parse("{\"call\":-1}", &r, &buf) == 0);
	CHECK(r.has_call && r.call == -1);
	free(buf);
	CHECK(parse("{\"ok\":\"yes\",\"notes\":5}", &r, &buf) == 0);
	CHECK(!r.has_ok && !r.notes);
	free(buf);
	CHECK(parse("{}", &r, &buf) == 0);
	free(buf);
}

static void test_malformed(void)
{
	static const char *const bad[] = {
		"", " ", "[]", "\"s\"", "42", "null", "{", "}", "{\"ok\":true",
		"{\"ok\":true}x", "{\"ok\":true}{}", "{\"ok\" true}", "{\"ok\":tru}",
		"{ok:true}", "{\"ok\":true,}", "{,}", "{\"a\":[1,]}", "{\"a\":[1 2]}",
		"{\"a\":\"unterminated}", "{\"a\":\"bad \\x escape\"}", "{\"a\":\"\\u12\"}",
		"{\"a\":\"raw\ttab\"}", "{\"a\":01}", "{\"a\":-}", "{\"a\":1.}", "{\"a\":1e}",
		"{\"a\":+1}", "{\"a\":.5}", "{\"a\":nul}", "{\"a\":\"\\",
	};
	struct jreply r;
	char *buf;
	char deep[200];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = parse(bad[i], &r, &buf);

		if (rc != -1)
			printf("FAIL accepted malformed: %s\n", bad[i]);
		failed += rc != -1;
		checks++;
		free(buf);
	}

	/* nesting deeper than the limit is refused, not recursed into */
	memset(deep, 0, sizeof(deep));
	strcpy(deep, "{\"a\":");
	for (int i = 0; i < 40; i++)
		strcat(deep, "[");
	CHECK(parse(deep, &r, &buf) == -1);
	free(buf);

	/* an embedded NUL byte in the reply does not end the parse early */
	{
		char nul[] = "{\"ok\":true,\0\"call\":1}";

		CHECK(jreply_parse(nul, sizeof(nul) - 1, &r) == -1);
	}
}

/* Everything the writer escapes, the reader decodes back to the same bytes. */
static void test_round_trip(void)
{
	char all[256];
	struct mem m = { 0 };
	struct jsink js;
	struct jreply r;

	for (int i = 1; i < 256; i++)
		all[i - 1] = (char)i;
	all[255] = '\0';
	jsink_init(&js, mem_flush, &m);
	jsink_lit(&js, "{\"ok\":true,\"notice\":");
	jsink_str(&js, all);
	jsink_lit(&js, "}");
	CHECK(jsink_finish(&js) == 0);
	m.data = realloc(m.data, m.len + 1);
	CHECK(jreply_parse(m.data, m.len, &r) == 0);
	CHECK(r.notice && strcmp(r.notice, all) == 0);
	free(m.data);
}

int main(void)
{
	test_escape();
	test_streaming();
	test_reply();
	test_malformed();
	test_round_trip();
	printf("test_json: %d checks, %d failed\n", checks, failed);
	return failed ? 1 : 0;
}
