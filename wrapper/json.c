/* SPDX-License-Identifier: Apache-2.0 */
/*
 * json.c - streaming JSON writer and a small validating reader for replies.
 */
#include "json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- writer --------------------------------------------------------------- */

void jsink_init(struct jsink *s, jsink_flush_fn flush, void *ctx)
{
	s->flush = flush;
	s->ctx = ctx;
	s->failed = 0;
	s->len = 0;
}

static void jsink_drain(struct jsink *s)
{
	if (!s->failed && s->len > 0 && s->flush(s->ctx, s->buf, s->len) != 0)
		s->failed = 1;
	s->len = 0;
}

void jsink_raw(struct jsink *s, const char *data, size_t len)
{
	while (len > 0 && !s->failed) {
		size_t room = sizeof(s->buf) - s->len;
		size_t n = len < room ? len : room;

		memcpy(s->buf + s->len, data, n);
		s->len += n;
		data += n;
		len -= n;
		if (s->len == sizeof(s->buf))
			jsink_drain(s);
	}
}

void jsink_lit(struct jsink *s, const char *text)
{
	jsink_raw(s, text, strlen(text));
}

void jsink_str(struct jsink *s, const char *str)
{
	const unsigned char *p = (const unsigned char *)str;
	const unsigned char *run = p;	/* start of bytes that need no escape */

	jsink_raw(s, "\"", 1);
	for (; *p; p++) {
		char esc[8];
		size_t esclen = 2;

		switch (*p) {
		case '"':  memcpy(esc, "\\\"", 2); break;
		case '\\': memcpy(esc, "\\\\", 2); break;
		case '\n': memcpy(esc, "\\n", 2); break;
		case '\r': memcpy(esc, "\\r", 2); break;
		case '\t': memcpy(esc, "\\t", 2); break;
		case '\b': memcpy(esc, "\\b", 2); break;
		case '\f': memcpy(esc, "\\f", 2); break;
		default:
			if (*p >= 0x20)
				continue;	/* plain byte, UTF-8 included */
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			esclen = 6;
		}
		jsink_raw(s, (const char *)run, (size_t)(p - run));
		jsink_raw(s, esc, esclen);
		run = p + 1;
	}
	jsink_raw(s, (const char *)run, (size_t)(p - run));
	jsink_raw(s, "\"", 1);
}

void jsink_int(struct jsink *s, long long v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%lld", v);

	jsink_raw(s, num, (size_t)n);
}

int jsink_finish(struct jsink *s)
{
	jsink_drain(s);
	return s->failed ? -1 : 0;
}

/* ---- reader --------------------------------------------------------------- */

#define MAX_DEPTH 32

struct cursor {
	char *p;
	char *end;
	int depth;
};

enum vtype { V_OBJECT, V_ARRAY, V_STRING, V_NUMBER, V_TRUE, V_FALSE, V_NULL };

struct value {
	enum vtype type;
	const char *str;	/* V_STRING: decoded, NUL-terminated, in place */
	bool is_int;		/* V_NUMBER: an integer that fits in long long */
	long long num;
};

static int parse_value(struct cursor *c, struct value *v, struct jreply *r);

static void skip_ws(struct cursor *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static int hex4(const char *p, const char *end, unsigned *out)
{
	unsigned v = 0;

	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		char ch = p[i];

		v <<= 4;
		if (ch >= '0' && ch <= '9')
			v |= (unsigned)(ch - '0');
		else if (ch >= 'a' && ch <= 'f')
			v |= (unsigned)(ch - 'a' + 10);
		else if (ch >= 'A' && ch <= 'F')
			v |= (unsigned)(ch - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

static char *put_utf8(char *dst, unsigned cp)
{
	if (cp < 0x80) {
		*dst++ = (char)cp;
	} else if (cp < 0x800) {
		*dst++ = (char)(0xc0 | (cp >> 6));
		*dst++ = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*dst++ = (char)(0xe0 | (cp >> 12));
		*dst++ = (char)(0x80 | ((cp >> 6) & 0x3f));
		*dst++ = (char)(0x80 | (cp & 0x3f));
	} else {
		*dst++ = (char)(0xf0 | (cp >> 18));
		*dst++ = (char)(0x80 | ((cp >> 12) & 0x3f));
		*dst++ = (char)(0x80 | ((cp >> 6) & 0x3f));
		*dst++ = (char)(0x80 | (cp & 0x3f));
	}
	return dst;
}

/*
 * A string starting at the opening quote.  It is decoded in place: every
 * escape is at least as long as what it decodes to (\uXXXX, 6 bytes, gives
 * at most 3; a surrogate pair, 12 bytes, gives 4), so the write position never
 * passes the read position, and the terminating NUL lands at or before the
 * closing quote, which has been consumed by then.
 */
static int parse_string(struct cursor *c, const char **out)
{
	char *src = c->p + 1;
	char *dst = src;
	char *start = src;

	for (;;) {
		unsigned char ch;

		if (src >= c->end)
			return -1;
		ch = (unsigned char)*src;
		if (ch == '"')
			break;
		if (ch < 0x20)
			return -1;		/* raw control character */
		if (ch != '\\') {
			*dst++ = *src++;
			continue;
		}
		if (src + 1 >= c->end)
			return -1;
		switch (src[1]) {
		case '"':  *dst++ = '"'; break;
		case '\\': *dst++ = '\\'; break;
		case '/':  *dst++ = '/'; break;
		case 'b':  *dst++ = '\b'; break;
		case 'f':  *dst++ = '\f'; break;
		case 'n':  *dst++ = '\n'; break;
		case 'r':  *dst++ = '\r'; break;
		case 't':  *dst++ = '\t'; break;
		case 'u': {
			unsigned cp, lo;

			if (hex4(src + 2, c->end, &cp) != 0)
				return -1;
			src += 6;
			if (cp >= 0xd800 && cp <= 0xdbff) {
				/* high surrogate: wants a \uDC00-\uDFFF after it */
				if (c->end - src >= 6 && src[0] == '\\' && src[1] == 'u' &&
				    hex4(src + 2, c->end, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff) {
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					src += 6;
				} else {
					cp = 0xfffd;
				}
			} else if (cp >= 0xdc00 && cp <= 0xdfff) {
				cp = 0xfffd;	/* lone low surrogate */
			}
			dst = put_utf8(dst, cp);
			continue;	/* src already advanced */
		}
		default:
			return -1;
		}
		src += 2;
	}
	c->p = src + 1;			/* past the closing quote */
	*dst = '\0';
	*out = start;
	return 0;
}

static int parse_number(struct cursor *c, struct value *v)
{
	char *start = c->p;
	char *p = c->p;
	bool integral = true;

	if (p < c->end && *p == '-')
		p++;
	if (p >= c->end)
		return -1;
	if (*p == '0') {
		p++;
	} else if (*p >= '1' && *p <= '9') {
		while (p < c->end && *p >= '0' && *p <= '9')
			p++;
	} else {
		return -1;
	}
	if (p < c->end && *p == '.') {
		integral = false;
		p++;
		if (p >= c->end || *p < '0' || *p > '9')
			return -1;
		while (p < c->end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < c->end && (*p == 'e' || *p == 'E')) {
		integral = false;
		p++;
		if (p < c->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= c->end || *p < '0' || *p > '9')
			return -1;
		while (p < c->end && *p >= '0' && *p <= '9')
			p++;
	}
	v->type = V_NUMBER;
	v->is_int = false;
	if (integral) {
		/* digits end before a non-digit or at the NUL put at text[len] */
		errno = 0;
		v->num = strtoll(start, NULL, 10);
		v->is_int = (errno == 0);
	}
	c->p = p;
	return 0;
}

static int parse_literal(struct cursor *c, const char *word, enum vtype type, struct value *v)
{
	size_t n = strlen(word);

	if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
		return -1;
	c->p += n;
	v->type = type;
	return 0;
}

/* Record a top-level member of the reply if it is one we use. */
static void keep_member(struct jreply *r, const char *key, const struct value *v)
{
	if (strcmp(key, "ok") == 0) {
		r->has_ok = (v->type == V_TRUE || v->type == V_FALSE);
		r->ok = (v->type == V_TRUE);
	} else if (strcmp(key, "call") == 0) {
		r->has_call = (v->type == V_NUMBER && v->is_int);
		r->call = r->has_call ? v->num : 0;
	} else if (strcmp(key, "grant") == 0) {
		r->has_grant = (v->type == V_NUMBER && v->is_int);
		r->grant = r->has_grant ? v->num : 0;
	} else if (strcmp(key, "wait_ms") == 0) {
		r->has_wait = (v->type == V_NUMBER && v->is_int);
		r->wait_ms = r->has_wait ? v->num : 0;
	} else if (strcmp(key, "notes") == 0) {
		r->notes = (v->type == V_STRING) ? v->str : NULL;
	} else if (strcmp(key, "notice") == 0) {
		r->notice = (v->type == V_STRING) ? v->str : NULL;
	} else if (strcmp(key, "error") == 0) {
		r->error = (v->type == V_STRING) ? v->str : NULL;
	}
}

/* An object at c->p == '{'.  r is non-NULL only for the top-level object. */
static int parse_object(struct cursor *c, struct jreply *r)
{
	c->p++;
	skip_ws(c);
	if (c->p < c->end && *c->p == '}') {
		c->p++;
		return 0;
	}
	for (;;) {
		const char *key;
		struct value v;

		skip_ws(c);
		if (c->p >= c->end || *c->p != '"' || parse_string(c, &key) != 0)
			return -1;
		skip_ws(c);
		if (c->p >= c->end || *c->p != ':')
			return -1;
		c->p++;
		if (parse_value(c, &v, NULL) != 0)
			return -1;
		if (r)
			keep_member(r, key, &v);
		skip_ws(c);
		if (c->p >= c->end)
			return -1;
		if (*c->p == '}') {
			c->p++;
			return 0;
		}
		if (*c->p != ',')
			return -1;
		c->p++;
	}
}

static int parse_array(struct cursor *c)
{
	c->p++;
	skip_ws(c);
	if (c->p < c->end && *c->p == ']') {
		c->p++;
		return 0;
	}
	for (;;) {
		struct value v;

		if (parse_value(c, &v, NULL) != 0)
			return -1;
		skip_ws(c);
		if (c->p >= c->end)
			return -1;
		if (*c->p == ']') {
			c->p++;
			return 0;
		}
		if (*c->p != ',')
			return -1;
		c->p++;
	}
}

static int parse_value(struct cursor *c, struct value *v, struct jreply *r)
{
	int rc;

	skip_ws(c);
	if (c->p >= c->end)
		return -1;
	switch (*c->p) {
	case '{':
	case '[':
		if (++c->depth > MAX_DEPTH)
			return -1;
		if (*c->p == '{') {
			v->type = V_OBJECT;
			rc = parse_object(c, r);
		} else {
			v->type = V_ARRAY;
			rc = parse_array(c);
		}
		c->depth--;
		return rc;
	case '"':
		v->type = V_STRING;
		return parse_string(c, &v->str);
	case 't':
		return parse_literal(c, "true", V_TRUE, v);
	case 'f':
		return parse_literal(c, "false", V_FALSE, v);
	case 'n':
		return parse_literal(c, "null", V_NULL, v);
	default:
		return parse_number(c, v);
	}
}

int jreply_parse(char *text, size_t len, struct jreply *r)
{
	struct cursor c = { text, text + len, 0 };
	struct value v;

	memset(r, 0, sizeof(*r));
	text[len] = '\0';		/* lets strtoll stop at the end of the text */
	skip_ws(&c);
	if (c.p >= c.end || *c.p != '{')
		return -1;
	if (parse_value(&c, &v, r) != 0)
		return -1;
	skip_ws(&c);
	return c.p == c.end ? 0 : -1;
}
