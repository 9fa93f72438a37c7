/* SPDX-License-Identifier: Apache-2.0 */
/*
 * toolcall.h - decide whether a bash argv is an agent's tool call.
 *
 * A tool call is a non-interactive command invocation: `bash -c CMD` in any of
 * the spellings coding agents use (-c, -lc, -c -l, --login -c, -o pipefail -c,
 * ...).  Everything else (login shells, scripts, bash reading stdin, -i) is not.
 * The rules follow bash 5.2's own option parser; see docs/wrapper.md.
 */
#ifndef AGENTSHIM_TOOLCALL_H
#define AGENTSHIM_TOOLCALL_H

/*
 * Returns the index in argv of the command string when argv is a tool call,
 * or -1 when it is not.  Pure: looks at argv only, never modifies it.
 * argv[0] is the program name and is not examined.
 */
int toolcall_command_index(int argc, char *const argv[]);

#endif /* AGENTSHIM_TOOLCALL_H */
