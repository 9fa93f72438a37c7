/* SPDX-License-Identifier: Apache-2.0 */
/*
 * json.h - the little JSON agentshim-bash needs, and no more.
 *
 * Writing: a buffered byte sink that escapes strings on the way out, so a
 * request of any size streams through a fixed buffer.
 * Reading: one reply object from agentshimd, of which only a few top-level
 * members are kept; the rest is validated and skipped.
 */
#ifndef AGENTSHIM_JSON_H
#define AGENTSHIM_JSON_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Where jsink output goes.  Called with the buffered bytes whenever the buffer
 * fills and on jsink_finish().  Returns 0 when all bytes were taken, -1 on error
 * (the sink then stops writing and remembers the failure).
 */
typedef int (*jsink_flush_fn)(void *ctx, const char *data, size_t len);

struct jsink {
	jsink_flush_fn flush;
	void *ctx;
	int failed;
	size_t len;
	char buf[8192];
};

void jsink_init(struct jsink *s, jsink_flush_fn flush, void *ctx);
/* Raw bytes, e.g. punctuation such as {"op": */
void jsink_raw(struct jsink *s, const char *data, size_t len);
void jsink_lit(struct jsink *s, const char *text);
/* A quoted, escaped JSON string.  Bytes >= 0x80 pass through untouched. */
void jsink_str(struct jsink *s, const char *str);
void jsink_int(struct jsink *s, long long v);
/* Flush what is left.  Returns 0 when everything was written, -1 otherwise. */
int jsink_finish(struct jsink *s);

/* The top-level members of a broker reply that the wrapper uses. */
struct jreply {
	bool has_ok, ok;
	bool has_call;		/* "call" present and an integer */
	long long call;
	bool has_grant;		/* "grant" present and an integer */
	long long grant;
	bool has_wait;		/* "wait_ms" present and an integer: an interim line */
	long long wait_ms;
	const char *notes;	/* NULL when absent or not a string */
	const char *notice;
	const char *error;
};

/*
 * Parse one JSON object from text[0..len).  The text is modified in place
 * (strings are decoded where they stand) and must have a writable byte at
 * text[len].  The string pointers in *r point into text.  Returns 0 when the
 * text is exactly one well-formed JSON object (surrounding whitespace
 * allowed), -1 otherwise.
 */
int jreply_parse(char *text, size_t len, struct jreply *r);

#endif /* AGENTSHIM_JSON_H */
