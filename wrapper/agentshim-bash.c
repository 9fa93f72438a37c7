/* SPDX-License-Identifier: Apache-2.0 */
/*
 * agentshim-bash - the /bin/bash seen by an AI coding agent inside its container.
 *
 * Bind-mounted over /bin/bash.  A tool call (a non-interactive `bash -c CMD` in
 * any spelling, see toolcall.c) is registered with agentshimd before it runs, so
 * that it runs in a cgroup of its own; anything else execs the real bash at once.
 *
 *   wrapper (parent)                     child                       agentshimd
 *   ----------------                     -----                       ----------
 *   fork ------------------------------> connect, send "start" ----> SO_PEERCRED pid
 *                                                                    moved into call-N
 *                                        <--------------------------- {"ok":true,"call":N}
 *            <-- N over a CLOEXEC pipe -- print notes, exec real bash
 *   forward signals to the child         ... the command runs ...
 *   waitpid() -------------------------- exit status
 *   connect, send "end" ----------------------------------------------> peak, usage, record
 *   print the notice, exit with the child's status
 *
 * The child, not the wrapper, talks to the broker for the start: the broker moves
 * the peer of the connection, and the peer must be the process that becomes bash.
 * Everything fails open: with no broker, the command runs unmanaged after one
 * warning line on stderr, and never later than AGENTSHIM_TIMEOUT_MS.
 *
 * The wrapper never reads stdin nor writes stdout; the child inherits all fds.
 * See docs/wrapper.md for the protocol and the exit status rules.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "toolcall.h"

#define DEFAULT_REAL_BASH	"/run/agentshim/bash.real"
#define DEFAULT_SOCKET		"/run/agentshim/broker.sock"
#define DEFAULT_TIMEOUT_MS	2000
#define MAX_TIMEOUT_MS		600000
#define MAX_REPLY		(64 * 1024)	/* one reply line, newline excluded */

/*
 * Signals the wrapper passes on to the command.  Not SIGKILL/SIGSTOP (cannot be
 * caught), not SIGCHLD/SIGPIPE (about the wrapper itself), not the synchronous
 * fault signals.
 */
static const int forwarded_signals[] = {
	SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM,
	SIGWINCH, SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU,
};
#define N_FORWARDED (sizeof(forwarded_signals) / sizeof(forwarded_signals[0]))

/* The command's pid while it may receive forwarded signals; 0 once reaped. */
static volatile sig_atomic_t child_pid;

/* ---- small helpers ------------------------------------------------------ */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Write everything, retrying short writes; errors are dropped (stderr may be gone). */
static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

/* Replace control characters so that text stays on one line. */
static void flatten(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = ' ';
}

/* One line on stderr, written with a single write(). */
__attribute__((format(printf, 1, 2)))
static void say(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;	/* truncated */
	line[n++] = '\n';
	write_all(STDERR_FILENO, line, (size_t)n);
}

/* "agentshim: " + text + "\n" in one writev(), whatever the length of text. */
static void say_text(const char *text)
{
	struct iovec iov[3] = {
		{ .iov_base = (void *)"agentshim: ", .iov_len = 11 },
		{ .iov_base = (void *)text, .iov_len = strlen(text) },
		{ .iov_base = (void *)"\n", .iov_len = 1 },
	};

	while (writev(STDERR_FILENO, iov, 3) < 0 && errno == EINTR)
		;
}

static const char *env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);

	return (v && *v) ? v : fallback;
}

static int timeout_ms(void)
{
	const char *v = getenv("AGENTSHIM_TIMEOUT_MS");
	char *end;
	long ms;

	if (!v || !*v)
		return DEFAULT_TIMEOUT_MS;
	errno = 0;
	ms = strtol(v, &end, 10);
	if (errno || *end || ms <= 0 || ms > MAX_TIMEOUT_MS)
		return DEFAULT_TIMEOUT_MS;
	return (int)ms;
}

/* execv() the real bash with the caller's argv; only returns by exiting. */
static _Noreturn void exec_real_bash(const char *real_bash, char *const argv[])
{
	int err;

	execv(real_bash, argv);
	err = errno;
	if (err == ENOENT || err == ENOTDIR) {
		say("agentshim-bash: real bash not found at %s: %s", real_bash, strerror(err));
		_exit(127);
	}
	say("agentshim-bash: cannot execute real bash at %s: %s", real_bash, strerror(err));
	_exit(126);
}

/*
 * A real bash path that leads back to this wrapper (the bind mount itself, by
 * mistake) would exec it over and over.  Refuse it.  Skipped without /proc.
 */
static void refuse_self(const char *real_bash)
{
	struct stat self, real;

	if (stat("/proc/self/exe", &self) == 0 && stat(real_bash, &real) == 0 &&
	    self.st_dev == real.st_dev && self.st_ino == real.st_ino) {
		say("agentshim-bash: real bash at %s is this wrapper", real_bash);
		_exit(126);
	}
}

/* ---- talking to agentshimd ---------------------------------------------- */

/* One connection: one request line out, one reply line back, under a deadline. */
struct broker {
	int fd;
	int timeout_ms;
	long long deadline;	/* CLOCK_MONOTONIC, ms */
	char reason[512];	/* why the exchange failed, for the warning line */
	size_t reply_len;	/* bytes of the current line in reply[] */
	size_t extra;		/* bytes received after that line (the next line's start) */
	char reply[MAX_REPLY + 1];	/* +1: jreply_parse() writes a NUL at the end */
};

__attribute__((format(printf, 2, 3)))
static void fail(struct broker *b, const char *fmt, ...)
{
	va_list ap;

	if (b->reason[0])
		return;			/* keep the first cause */
	va_start(ap, fmt);
	vsnprintf(b->reason, sizeof(b->reason), fmt, ap);
	va_end(ap);
}

/* Wait until fd is ready for events or the deadline passes. */
static int wait_ready(struct broker *b, short events, const char *waiting_for)
{
	for (;;) {
		struct pollfd pfd = { .fd = b->fd, .events = events };
		long long left = b->deadline - now_ms();
		int n;

		if (left <= 0) {
			fail(b, "%s within %d ms", waiting_for, b->timeout_ms);
			return -1;
		}
		n = poll(&pfd, 1, (int)left);
		if (n > 0)
			return 0;	/* ready, or an error the next call will report */
		if (n < 0 && errno != EINTR) {
			fail(b, "poll: %s", strerror(errno));
			return -1;
		}
	}
}

static int broker_connect(struct broker *b, const char *path, int timeout)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = timeout / 1000, .tv_usec = (timeout % 1000) * 1000 };
	struct stat st;

	b->fd = -1;
	b->reason[0] = '\0';
	b->reply_len = 0;
	b->extra = 0;
	b->timeout_ms = timeout;
	b->deadline = now_ms() + timeout;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		fail(b, "socket path too long: %s", path);
		return -1;
	}
	if (stat(path, &st) != 0) {
		if (errno == ENOENT)
			fail(b, "no broker socket at %s", path);
		else
			fail(b, "cannot reach %s: %s", path, strerror(errno));
		return -1;
	}
	memcpy(addr.sun_path, path, strlen(path) + 1);

	b->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (b->fd < 0) {
		fail(b, "socket: %s", strerror(errno));
		return -1;
	}
	/*
	 * A unix stream connect() only blocks while the listener's backlog is
	 * full; SO_SNDTIMEO bounds that wait.  All later I/O is non-blocking
	 * (MSG_DONTWAIT) and bounded by poll().
	 */
	setsockopt(b->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(b->fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		fail(b, "cannot connect to %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* jsink flush callback: send bytes to the broker before the deadline. */
static int broker_send(void *ctx, const char *data, size_t len)
{
	struct broker *b = ctx;

	while (len > 0) {
		ssize_t n = send(b->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			data += n;
			len -= (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_ready(b, POLLOUT, "broker did not take the request") != 0)
				return -1;
		} else {
			fail(b, "send: %s", strerror(errno));
			return -1;
		}
	}
	return 0;
}

/*
 * Read one reply line into b->reply and parse it.  A reply cut short by EOF
 * without its newline is still accepted if it parses.
 */
static int broker_reply(struct broker *b, struct jreply *r)
{
	char *nl;

	/* bytes that came after the previous line are the start of this one */
	if (b->extra) {
		memmove(b->reply, b->reply + b->reply_len + 1, b->extra);
		b->reply_len = b->extra;
		b->extra = 0;
		nl = memchr(b->reply, '\n', b->reply_len);
		if (nl) {
			b->extra = b->reply_len - (size_t)(nl - b->reply) - 1;
			b->reply_len = (size_t)(nl - b->reply);
			goto parse;
		}
	} else {
		b->reply_len = 0;
	}
	for (;;) {
		ssize_t n;

		if (b->reply_len == MAX_REPLY) {
			fail(b, "broker reply longer than %d bytes", MAX_REPLY);
			return -1;
		}
		n = recv(b->fd, b->reply + b->reply_len, MAX_REPLY - b->reply_len, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (wait_ready(b, POLLIN, "no reply from broker") != 0)
				return -1;
			continue;
		}
		if (n < 0) {
			fail(b, "recv: %s", strerror(errno));
			return -1;
		}
		if (n == 0) {
			if (b->reply_len == 0) {
				fail(b, "broker closed the connection without a reply");
				return -1;
			}
			break;
		}
		nl = memchr(b->reply + b->reply_len, '\n', (size_t)n);
		b->reply_len += (size_t)n;
		if (nl) {
			b->extra = b->reply_len - (size_t)(nl - b->reply) - 1;
			b->reply_len = (size_t)(nl - b->reply);
			break;
		}
	}
parse:
	if (jreply_parse(b->reply, b->reply_len, r) != 0) {
		fail(b, "malformed reply from broker");
		return -1;
	}
	return 0;
}

static void broker_close(struct broker *b)
{
	if (b->fd >= 0)
		close(b->fd);
	b->fd = -1;
}

/* Static: the reply buffer is 64 KiB, and each process uses one at a time. */
static struct broker conversation;

/*
 * The "start" exchange, run by the child.  Returns 0 when the broker accepted
 * the call, with *call its number (or -1 for a call nested in another call,
 * which the enclosing call accounts for and which has no end to report) and
 * *notes the broker's notes (or NULL).  Returns -1 with b->reason set when
 * the command must run unmanaged.
 */
static int broker_start(struct broker *b, const char *socket_path, int timeout,
			int argc, char *const argv[], pid_t caller,
			long long *call, const char **notes)
{
	struct jsink out;
	struct jreply r;
	char *cwd;

	*call = -1;
	*notes = NULL;
	if (broker_connect(b, socket_path, timeout) != 0)
		return -1;

	jsink_init(&out, broker_send, b);
	jsink_lit(&out, "{\"op\":\"start\",\"argv\":[");
	for (int i = 0; i < argc; i++) {
		if (i > 0)
			jsink_lit(&out, ",");
		jsink_str(&out, argv[i]);
	}
	jsink_lit(&out, "],\"cwd\":");
	cwd = getcwd(NULL, 0);		/* any length; NULL if the cwd was removed */
	jsink_str(&out, cwd ? cwd : "");
	free(cwd);
	jsink_lit(&out, ",\"intent\":");
	jsink_str(&out, env_or("AGENTSHIM_INTENT", ""));
	jsink_lit(&out, ",\"ppid\":");
	jsink_int(&out, caller);
	jsink_lit(&out, "}\n");
	if (jsink_finish(&out) != 0) {
		fail(b, "could not send the request");
		return -1;
	}

	/*
	 * Admission may hold the call back: the broker then sends interim lines
	 * {"ok":true,"wait_ms":N} first, each extending the deadline by N ms.
	 */
	for (;;) {
		if (broker_reply(b, &r) != 0)
			return -1;
		if (!r.has_wait || r.has_call)
			break;
		if (r.wait_ms > 0 && r.wait_ms <= MAX_TIMEOUT_MS)
			b->deadline = now_ms() + r.wait_ms;
	}
	if (r.has_ok && !r.ok) {
		fail(b, "broker refused: %s", r.error && *r.error ? r.error : "no reason given");
		return -1;
	}
	if (!r.has_ok || !r.has_call) {
		fail(b, "malformed reply from broker");
		return -1;
	}
	*call = r.call < 0 ? -1 : r.call;
	*notes = r.notes;
	return 0;
}

/* The "end" exchange, run by the wrapper after the command finished. */
static void broker_end(struct broker *b, const char *socket_path, int timeout,
		       long long call, int status)
{
	struct jsink out;
	struct jreply r;
	int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	int code = sig ? 128 + sig : WEXITSTATUS(status);

	if (broker_connect(b, socket_path, timeout) != 0)
		goto failed;
	jsink_init(&out, broker_send, b);
	jsink_lit(&out, "{\"op\":\"end\",\"call\":");
	jsink_int(&out, call);
	jsink_lit(&out, ",\"status\":");
	jsink_int(&out, code);
	jsink_lit(&out, ",\"signal\":");
	jsink_int(&out, sig);
	jsink_lit(&out, "}\n");
	if (jsink_finish(&out) != 0) {
		fail(b, "could not send the request");
		goto failed;
	}
	if (broker_reply(b, &r) != 0)
		goto failed;
	broker_close(b);
	if (r.notice && *r.notice) {
		/* printed as is: it may hold several lines */
		size_t len = strlen(r.notice);

		write_all(STDERR_FILENO, r.notice, len);
		if (r.notice[len - 1] != '\n')
			write_all(STDERR_FILENO, "\n", 1);
	}
	return;
failed:
	broker_close(b);
	flatten(b->reason);
	say("agentshim: could not report the end of call %lld (%s)", call, b->reason);
}

/* ---- signals ------------------------------------------------------------ */

/*
 * The terminal driver sends these to the whole foreground process group, so
 * the command, which is in the wrapper's process group, got its own copy.
 * The kernel marks them SI_KERNEL; forwarding them would deliver them twice.
 */
static int from_terminal(int sig, const siginfo_t *si)
{
	if (!si || si->si_code != SI_KERNEL)
		return 0;
	return sig == SIGINT || sig == SIGQUIT || sig == SIGTSTP || sig == SIGWINCH;
}

static void forward_signal(int sig, siginfo_t *si, void *uctx)
{
	int saved_errno = errno;
	pid_t pid = child_pid;

	(void)uctx;
	if (pid > 0 && !from_terminal(sig, si))
		kill(pid, sig);
	errno = saved_errno;
}

static void forwarded_set(sigset_t *set)
{
	sigemptyset(set);
	for (size_t i = 0; i < N_FORWARDED; i++)
		sigaddset(set, forwarded_signals[i]);
}

/*
 * The command stopped (SIGTSTP, SIGSTOP, ...): stop the wrapper the same way so
 * that the caller's job control sees it, then continue the command when the
 * wrapper is continued.  This is what a shell waiting for bash expects.
 */
static void stop_like_child(int sig, pid_t child)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL }, old;
	sigset_t one, mask;

	if (getpid() == 1)
		return;			/* init cannot stop itself */
	sigemptyset(&one);
	sigaddset(&one, sig);
	if (sig != SIGSTOP)
		sigaction(sig, &dfl, &old);
	sigprocmask(SIG_UNBLOCK, &one, &mask);
	raise(sig);			/* stopped here until SIGCONT */
	sigprocmask(SIG_SETMASK, &mask, NULL);
	if (sig != SIGSTOP)
		sigaction(sig, &old, NULL);
	kill(child, SIGCONT);
}

/* Exit the way the command did: same code, or death by the same signal. */
static _Noreturn void exit_like(int status)
{
	if (WIFEXITED(status))
		exit(WEXITSTATUS(status));
	if (WIFSIGNALED(status)) {
		int sig = WTERMSIG(status);
		struct rlimit no_core = { 0, 0 };
		struct sigaction dfl = { .sa_handler = SIG_DFL };
		sigset_t one;

		/* the command already dumped its core if it had to; the wrapper must not */
		setrlimit(RLIMIT_CORE, &no_core);
		sigaction(sig, &dfl, NULL);
		sigemptyset(&one);
		sigaddset(&one, sig);
		sigprocmask(SIG_UNBLOCK, &one, NULL);
		raise(sig);
		/* still alive: pid 1 in a namespace, or a signal that cannot kill */
		_exit(128 + sig);
	}
	_exit(127);
}

/* ---- the tool call -------------------------------------------------------- */

/*
 * Child side: register with the broker, tell the parent the call number, then
 * become the real bash.  Runs with the caller's signal dispositions and mask,
 * except SIGPIPE, ignored until the exec so a dead broker or stderr cannot kill
 * us before the command runs.
 */
static _Noreturn void run_child(const char *real_bash, int argc, char *argv[], int report_fd,
				pid_t caller, const struct sigaction *orig_pipe)
{
	struct broker *b = &conversation;
	const char *notes = NULL;
	long long call = -1;

	if (broker_start(b, env_or("AGENTSHIM_SOCKET", DEFAULT_SOCKET), timeout_ms(),
			 argc, argv, caller, &call, &notes) == 0) {
		while (call >= 0 && write(report_fd, &call, sizeof(call)) < 0 && errno == EINTR)
			;
		if (notes && *notes) {
			flatten((char *)notes);	/* points into our own reply buffer */
			say_text(notes);
		}
	} else {
		flatten(b->reason);
		say("agentshim: running unmanaged (%s)", b->reason);
	}
	broker_close(b);
	close(report_fd);
	sigaction(SIGPIPE, orig_pipe, NULL);
	exec_real_bash(real_bash, argv);
}

/* Parent side: wait for the command, mirroring its stops.  Returns its status. */
static int wait_child(pid_t child, const sigset_t *forwarded)
{
	for (;;) {
		siginfo_t info;
		sigset_t before;
		int status = 0;
		pid_t r;

		/* Wait for a state change without reaping, so child_pid stays valid. */
		memset(&info, 0, sizeof(info));
		if (waitid(P_PID, (id_t)child, &info, WEXITED | WSTOPPED | WNOWAIT) != 0) {
			if (errno == EINTR)
				continue;
			say("agentshim: waiting for the command failed: %s", strerror(errno));
			sigprocmask(SIG_BLOCK, forwarded, NULL);
			child_pid = 0;
			return 127 << 8;
		}

		/*
		 * Consume it with forwarded signals blocked: once the child is
		 * reaped its pid may be reused, and the handler must not reach it.
		 */
		sigprocmask(SIG_BLOCK, forwarded, &before);
		do {
			r = waitpid(child, &status, WUNTRACED | WNOHANG);
		} while (r < 0 && errno == EINTR);
		if (r == child && !WIFSTOPPED(status)) {
			child_pid = 0;
			return status;	/* forwarded signals stay blocked */
		}
		sigprocmask(SIG_SETMASK, &before, NULL);
		if (r == child)
			stop_like_child(WSTOPSIG(status), child);
	}
}

static _Noreturn void run_tool_call(const char *real_bash, int argc, char *argv[])
{
	struct sigaction orig[N_FORWARDED], orig_chld, orig_pipe;
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	struct sigaction ign = { .sa_handler = SIG_IGN };
	struct sigaction fwd = { .sa_sigaction = forward_signal, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigset_t forwarded, orig_mask;
	pid_t caller = getppid();	/* the agent process that ran "bash" */
	pid_t self = getpid();
	long long call = -1;
	int report[2];
	int status;
	pid_t pid;

	if (access(real_bash, X_OK) != 0)
		exec_real_bash(real_bash, argv);	/* reports and exits 126/127 */

	if (pipe2(report, O_CLOEXEC) != 0) {
		say("agentshim: running unmanaged (pipe: %s)", strerror(errno));
		exec_real_bash(real_bash, argv);
	}

	/*
	 * Block the forwarded signals across fork() so none is handled before
	 * child_pid is set, and make sure SIGCHLD is not ignored: an inherited
	 * SIG_IGN would have the kernel reap the child behind our back.
	 */
	forwarded_set(&forwarded);
	sigprocmask(SIG_BLOCK, &forwarded, &orig_mask);
	sigaction(SIGCHLD, &dfl, &orig_chld);
	sigaction(SIGPIPE, &ign, &orig_pipe);

	pid = fork();
	if (pid < 0) {
		say("agentshim: running unmanaged (fork: %s)", strerror(errno));
		sigaction(SIGCHLD, &orig_chld, NULL);
		sigaction(SIGPIPE, &orig_pipe, NULL);
		sigprocmask(SIG_SETMASK, &orig_mask, NULL);
		exec_real_bash(real_bash, argv);
	}
	if (pid == 0) {
		/*
		 * If the wrapper is SIGKILLed, take the command down too, as a
		 * SIGKILL to a plain bash would.  Checked against a wrapper that
		 * died before prctl().
		 */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != self)
			_exit(128 + SIGKILL);
		close(report[0]);
		sigaction(SIGCHLD, &orig_chld, NULL);
		sigprocmask(SIG_SETMASK, &orig_mask, NULL);
		run_child(real_bash, argc, argv, report[1], caller, &orig_pipe);
	}

	/* Parent.  Forward the signals the caller did not ignore. */
	close(report[1]);
	child_pid = pid;
	fwd.sa_mask = forwarded;	/* one forward at a time */
	for (size_t i = 0; i < N_FORWARDED; i++) {
		sigaction(forwarded_signals[i], NULL, &orig[i]);
		if (orig[i].sa_handler != SIG_IGN)
			sigaction(forwarded_signals[i], &fwd, NULL);
	}
	sigprocmask(SIG_SETMASK, &orig_mask, NULL);	/* what the caller blocked stays blocked */

	status = wait_child(pid, &forwarded);

	/*
	 * From here on the forwarded signals stay blocked: the end report is
	 * bounded by the timeout, and the exit status must be the command's.
	 */
	for (size_t i = 0; i < N_FORWARDED; i++)
		sigaction(forwarded_signals[i], &orig[i], NULL);
	sigaction(SIGCHLD, &orig_chld, NULL);

	/* The call number, if the child got one: the pipe then holds 8 bytes. */
	{
		long long n;
		ssize_t got;

		do {
			got = read(report[0], &n, sizeof(n));
		} while (got < 0 && errno == EINTR);
		if (got == (ssize_t)sizeof(n))
			call = n;
		close(report[0]);
	}

	if (call >= 0)
		broker_end(&conversation, env_or("AGENTSHIM_SOCKET", DEFAULT_SOCKET),
			   timeout_ms(), call, status);
	exit_like(status);
}

int main(int argc, char *argv[])
{
	const char *real_bash = env_or("AGENTSHIM_REAL_BASH", DEFAULT_REAL_BASH);

	refuse_self(real_bash);
	if (toolcall_command_index(argc, argv) < 0)
		exec_real_bash(real_bash, argv);
	run_tool_call(real_bash, argc, argv);
}
