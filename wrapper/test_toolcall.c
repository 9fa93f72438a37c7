/* SPDX-License-Identifier: Apache-2.0 */
/* test_toolcall.c - table tests for toolcall_command_index(). */
#include <stdio.h>

#include "toolcall.h"

struct tcase {
	const char *why;
	const char *const *argv;	/* NULL-terminated */
	int want;			/* index of the command string, or -1 */
};

#define ARGV(...) ((const char *const[]){ __VA_ARGS__, NULL })
#define CMD "echo hi"

static const struct tcase cases[] = {
	/* tool calls */
	{ "plain -c", ARGV("bash", "-c", CMD), 2 },
	{ "Codex -lc", ARGV("bash", "-lc", CMD), 2 },
	{ "Claude Code -c -l", ARGV("bash", "-c", "-l", "source snap && eval 'ls'"), 3 },
	{ "--login -c", ARGV("bash", "--login", "-c", CMD), 3 },
	{ "-ec cluster", ARGV("bash", "-ec", CMD), 2 },
	{ "-o pipefail -c", ARGV("bash", "-o", "pipefail", "-c", CMD), 4 },
	{ "-co: o takes the next word", ARGV("bash", "-co", "pipefail", CMD), 3 },
	{ "-oc: o takes the next word", ARGV("bash", "-oc", "pipefail", CMD), 3 },
	{ "-ooc: two o take two words", ARGV("bash", "-ooc", "pipefail", "errexit", CMD), 4 },
	{ "+O extglob -c", ARGV("bash", "+O", "extglob", "-c", CMD), 4 },
	{ "-O extglob -c", ARGV("bash", "-O", "extglob", "-c", CMD), 4 },
	{ "+o posix -c", ARGV("bash", "+o", "posix", "-c", CMD), 4 },
	{ "--rcfile takes a word", ARGV("bash", "--rcfile", "/x", "-c", CMD), 4 },
	{ "--init-file takes a word", ARGV("bash", "--init-file", "/x", "-c", CMD), 4 },
	{ "-login is --login", ARGV("bash", "-login", "-c", CMD), 3 },
	{ "several long options", ARGV("bash", "--norc", "--noprofile", "-c", CMD), 4 },
	{ "-c -- CMD", ARGV("bash", "-c", "--", CMD), 3 },
	{ "-c - CMD", ARGV("bash", "-c", "-", CMD), 3 },
	{ "lone + is skipped", ARGV("bash", "+", "-c", CMD), 3 },
	{ "+i is not interactive", ARGV("bash", "+i", "-c", CMD), 3 },
	{ "-i then +i", ARGV("bash", "-i", "+i", "-c", CMD), 4 },
	{ "+c also means -c", ARGV("bash", "+c", CMD), 2 },
	{ "operands after CMD", ARGV("bash", "-c", CMD, "zero", "one", "-i"), 2 },
	{ "empty command", ARGV("bash", "-c", ""), 2 },
	{ "command looks like an option", ARGV("bash", "-c", "--", "-i"), 3 },
	{ "-x -c", ARGV("bash", "-x", "-c", CMD), 3 },
	{ "-s -c", ARGV("bash", "-s", "-c", CMD), 3 },
	{ "login argv0", ARGV("-bash", "-c", CMD), 2 },
	{ "--login after -c (bash refuses; lenient)", ARGV("bash", "-c", "--login", CMD), 3 },
	{ "unknown --option (bash refuses; lenient)", ARGV("bash", "--bogus", "-c", CMD), 3 },

	/* not tool calls */
	{ "no arguments", ARGV("bash"), -1 },
	{ "login shell -l", ARGV("bash", "-l"), -1 },
	{ "login argv0 alone", ARGV("-bash"), -1 },
	{ "-s reads stdin", ARGV("bash", "-s"), -1 },
	{ "script file", ARGV("bash", "script.sh"), -1 },
	{ "-c after the script name", ARGV("bash", "script.sh", "-c", CMD), -1 },
	{ "-l script", ARGV("bash", "-l", "script.sh"), -1 },
	{ "-i -c", ARGV("bash", "-i", "-c", CMD), -1 },
	{ "-ic", ARGV("bash", "-ic", CMD), -1 },
	{ "-c -i", ARGV("bash", "-c", "-i", CMD), -1 },
	{ "-c without command", ARGV("bash", "-c"), -1 },
	{ "-l -c without command", ARGV("bash", "-l", "-c"), -1 },
	{ "-- ends options before -c", ARGV("bash", "--", "-c", CMD), -1 },
	{ "- ends options before -c", ARGV("bash", "-", "-c", CMD), -1 },
	{ "-O eats -c", ARGV("bash", "-O", "-c", CMD), -1 },
	{ "--rcfile eats -c", ARGV("bash", "--rcfile", "-c", CMD), -1 },
	{ "-co: o eats the command", ARGV("bash", "-co", CMD), -1 },
	{ "-c -login: a cluster with o and i", ARGV("bash", "-c", "-login", CMD), -1 },
	{ "--rcfile without argument", ARGV("bash", "--rcfile"), -1 },
	{ "--version prints and exits", ARGV("bash", "--version", "-c", CMD), -1 },
	{ "--help prints and exits", ARGV("bash", "--help"), -1 },
	{ "--interactive-ish: -i alone", ARGV("bash", "-i"), -1 },
};

int main(void)
{
	int failed = 0;
	int n = (int)(sizeof(cases) / sizeof(cases[0]));

	for (int i = 0; i < n; i++) {
		const struct tcase *tc = &cases[i];
		int argc = 0;
		int got;

		while (tc->argv[argc])
			argc++;
		got = toolcall_command_index(argc, (char *const *)tc->argv);
		if (got != tc->want) {
			printf("FAIL %-45s want %d got %d:", tc->why, tc->want, got);
			for (int a = 0; a < argc; a++)
				printf(" [%s]", tc->argv[a]);
			printf("\n");
			failed++;
		}
	}
	/* argc 0: execve() with an empty argv */
	{
		char *empty[] = { NULL };

		if (toolcall_command_index(0, empty) != -1) {
			printf("FAIL empty argv\n");
			failed++;
		}
	}
	printf("test_toolcall: %d cases, %d failed\n", n + 1, failed);
	return failed ? 1 : 0;
}
