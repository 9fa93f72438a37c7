/* SPDX-License-Identifier: Apache-2.0 */
/*
 * toolcall.c - classify a bash command line as tool call or not.
 *
 * bash parses its invocation options in two passes (shell.c):
 *
 *   1. GNU long options, spelled --name or -name, as long as they match one of
 *      bash's long option names.  --rcfile and --init-file take the next word.
 *   2. Short option words starting with '-' or '+'.  Each letter of a cluster is
 *      one option; every 'o' or 'O' in a cluster takes the next unused word as
 *      its argument ("-ooc pipefail errexit CMD" is valid).  "-" and "--" end
 *      the options; a lone "+" is skipped.
 *
 * The first word after the options is the command string when -c was given.
 * We mirror that, with two deliberate differences that only matter for command
 * lines bash itself rejects with a usage error:
 *   - a --name word after short options is skipped (with its argument, if it
 *     is --rcfile or --init-file), not read as a cluster of letters;
 *   - unknown option letters and unknown --names are plain flags.
 */
#include "toolcall.h"

#include <stddef.h>
#include <string.h>

struct long_option {
	const char *name;
	int takes_arg;		/* consumes the next word */
	int informational;	/* bash prints something and exits: never a tool call */
};

static const struct long_option long_options[] = {
	{ "debug", 0, 0 },
	{ "debugger", 0, 0 },
	{ "dump-po-strings", 0, 0 },
	{ "dump-strings", 0, 0 },
	{ "help", 0, 1 },
	{ "init-file", 1, 0 },
	{ "login", 0, 0 },
	{ "noediting", 0, 0 },
	{ "noprofile", 0, 0 },
	{ "norc", 0, 0 },
	{ "posix", 0, 0 },
	{ "pretty-print", 0, 0 },
	{ "protected", 0, 0 },
	{ "rcfile", 1, 0 },
	{ "restricted", 0, 0 },
	{ "verbose", 0, 0 },
	{ "version", 0, 1 },
	{ "wordexp", 0, 0 },
	{ NULL, 0, 0 },
};

static const struct long_option *find_long_option(const char *name)
{
	for (const struct long_option *lo = long_options; lo->name; lo++)
		if (strcmp(lo->name, name) == 0)
			return lo;
	return NULL;
}

/* What the option words said so far. */
struct parse_state {
	int command_mode;	/* -c seen */
	int interactive;	/* -i seen (and not undone by +i) */
	int refused;		/* bash would print and exit, or reject the line */
};

/*
 * If argv[i] is a long option (--name, or -name when single_dash_ok), apply it
 * and return the index of the next unparsed word.  Returns i when argv[i] is
 * not a long option.
 */
static int parse_long(int argc, char *const argv[], int i, int single_dash_ok,
		      struct parse_state *st)
{
	const char *word = argv[i];
	const char *name;
	const struct long_option *lo;

	if (word[0] != '-')
		return i;
	if (word[1] == '-' && word[2] != '\0')
		name = word + 2;
	else if (single_dash_ok && word[1] != '-')
		name = word + 1;
	else
		return i;

	lo = find_long_option(name);
	if (!lo)
		return i;
	if (lo->informational)
		st->refused = 1;
	if (lo->takes_arg) {
		if (i + 1 >= argc) {
			st->refused = 1;	/* "--rcfile: option requires an argument" */
			return argc;
		}
		return i + 2;
	}
	return i + 1;
}

int toolcall_command_index(int argc, char *const argv[])
{
	struct parse_state st = { 0, 0, 0 };
	int i = 1;

	if (argc < 2 || !argv)
		return -1;

	/* Pass 1: leading long options. */
	while (i < argc && argv[i] && !st.refused) {
		int next = parse_long(argc, argv, i, 1, &st);

		if (next == i)
			break;
		i = next;
	}

	/* Pass 2: short option clusters, until "-", "--" or a non-option word. */
	while (i < argc && argv[i] && !st.refused) {
		const char *word = argv[i];
		int next;

		if (word[0] != '-' && word[0] != '+')
			break;			/* first operand */
		if (word[0] == '-' && (word[1] == '\0' || strcmp(word, "--") == 0)) {
			i++;			/* "-" or "--": end of options */
			break;
		}
		if (word[0] == '-' && word[1] == '-') {
			/*
			 * --name after short options (bash refuses these with a
			 * usage error): skip it, with its argument if it has one,
			 * rather than reading its letters as a cluster.
			 */
			next = parse_long(argc, argv, i, 0, &st);
			i = (next != i) ? next : i + 1;
			continue;
		}

		/* A cluster such as -lc, +o or -ooc: letters after the sign. */
		next = i + 1;
		for (const char *p = word + 1; *p; p++) {
			switch (*p) {
			case 'c':
				st.command_mode = 1;
				break;
			case 'i':
				st.interactive = (word[0] == '-');
				break;
			case 'o':
			case 'O':
				/* takes the next unused word; alone at the end it only lists */
				if (next < argc)
					next++;
				break;
			default:
				break;		/* any other flag: irrelevant here */
			}
		}
		i = next;
	}

	if (st.refused || !st.command_mode || st.interactive)
		return -1;
	if (i >= argc || !argv[i])
		return -1;			/* "-c: option requires an argument" */
	return i;
}
