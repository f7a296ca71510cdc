/* The surge's open-loop load generator (liangcao checkout surge), compiled at run time with the system's C
 * compiler; the Python generator in surge.py is the fallback and the reference for what this does.
 *
 * Why C: on the two cores the benchmark runs on, the load generator shares the CPU with the gateway it
 * measures. At midnight (10x capacity, some ten thousand requests a second) a Python generator spent about
 * 40 us of CPU per request, a third of a core the gateway then lacked; the measurement would be of the
 * generator as much as of the gateway. This program does the same work (a schedule fixed in advance, one
 * request in flight per keep-alive connection, latency from the scheduled time) in a few microseconds of
 * user time per request; what is left is the kernel's socket work, which any client pays.
 *
 * Usage: loadgen SCHEDULE OUTPUT PORT CONNECTIONS TIMEOUT_US START_US
 *   START_US is CLOCK_MONOTONIC in microseconds (Python's time.monotonic() on Linux).
 * SCHEDULE (text):
 *   POOL <kind> <n>\n followed by n lines "<order id> <token>" (kind 0: orders to pay, 1: paid orders to
 *   confirm; the token is the buyer's session, sent as "authorization: Bearer <token>")
 *   then one line per request, in time order: <t_us> <kind> [<path> <token>]\n
 *   kinds 0 pay and 1 confirm take an order from their pool (a shed one goes back: the shopper pays again
 *   later); kinds 2-4 (query, browse, report) are GETs of <path>.
 * OUTPUT (binary, little-endian int64 records of 7): kind, t_sched_us, t_dispatch_us, t_sent_us, t_done_us,
 *   status, flags (times relative to START_US; dispatch: when the schedule reached it, as the Python generator
 *   reports its lag; sent: when it went out, after waiting for a free connection; flags: 1 shed, 2 lost
 *   (timeout or broken), 4 skipped (pool empty)); then one trailer record: -1, peak RSS in KiB, 0, 0, 0, 0, 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_MAX 65536
#define PATH_MAX_LEN 512
#define ID_MAX 320 /* a pool entry: an order id (64 at most), a space and its buyer's session token */

typedef struct {
    int64_t t;  /* scheduled, microseconds from START */
    int kind;
    char *path; /* kinds 2-4 */
    char *auth; /* kinds 2-4: the caller's session token */
    char order[ID_MAX];
    int64_t dispatched, sent, done;
    int status, flags, tries, got_answer;
} Req;

typedef struct {
    int fd;
    int req; /* index in reqs, -1 idle */
    int got; /* bytes of the current answer arrived */
    size_t len;
    char buf[BUF_MAX];
} Conn;

typedef struct {
    char (*ids)[ID_MAX];
    int n, cap;
} Pool;

static Req *reqs;
static int nreq;
static Conn *conns;
static int nconn, conn_max;
static int *idle, nidle;
static int *waitq, wq_head, wq_tail, wq_cap;
static Pool pools[2];
static int ep, port;
static int64_t start_us, timeout_us;

static int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void pool_push(int k, const char *id) {
    Pool *p = &pools[k];
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 1024;
        p->ids = realloc(p->ids, (size_t)p->cap * ID_MAX);
        if (!p->ids) die("realloc");
    }
    snprintf(p->ids[p->n++], ID_MAX, "%s", id);
}

/* A shed order goes to the bottom of the pool (paid again later, after the fresh ones). */
static void pool_unshift(int k, const char *id) {
    Pool *p = &pools[k];
    pool_push(k, id);
    memmove(p->ids[1], p->ids[0], (size_t)(p->n - 1) * ID_MAX);
    snprintf(p->ids[0], ID_MAX, "%s", id);
}

static int open_conn(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(0x7f000001);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    int c = nconn++;
    conns[c].fd = fd;
    conns[c].req = -1;
    conns[c].len = 0;
    conns[c].got = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    return c;
}

static void finish(int r, int status, int flags) {
    Req *q = &reqs[r];
    q->done = mono_us() - start_us;
    q->status = status;
    q->flags |= flags;
    if ((flags & 1) && q->kind <= 1) pool_unshift(q->kind, q->order);
}

static void close_conn(int c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, conns[c].fd, NULL);
    close(conns[c].fd);
    /* the slot is reused: move the last connection here */
    int last = --nconn;
    if (c != last) {
        conns[c] = conns[last];
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)c};
        epoll_ctl(ep, EPOLL_CTL_MOD, conns[c].fd, &ev);
        for (int i = 0; i < nidle; i++)
            if (idle[i] == last) idle[i] = c;
    }
}

static void dispatch(int r);

static void send_on(int c, int r) {
    Req *q = &reqs[r];
    char out[PATH_MAX_LEN + 1024]; /* the request line, its headers and a session token */
    int n;
    if (q->kind <= 1) {
        const char *verb = q->kind == 0 ? "pay" : "confirm";
        const char *sp = strchr(q->order, ' '); /* "<order id> <token>" */
        int id_len = sp ? (int)(sp - q->order) : (int)strlen(q->order);
        const char *token = sp ? sp + 1 : "";
        n = snprintf(out, sizeof out,
                     "POST /v1/orders/%.*s/%s HTTP/1.1\r\nhost: gw\r\ncontent-length: 0\r\nidempotency-key: %s-%.*s\r\n"
                     "authorization: Bearer %s\r\n\r\n",
                     id_len, q->order, verb, verb, id_len, q->order, token);
    } else {
        n = snprintf(out, sizeof out, "GET %s HTTP/1.1\r\nhost: gw\r\ncontent-length: 0\r\nauthorization: Bearer %s\r\n\r\n",
                     q->path, q->auth);
    }
    if (n < 0 || n >= (int)sizeof out) { /* a schedule line too long for the buffer: a bug of the writer */
        fprintf(stderr, "loadgen: request too long\n");
        exit(2);
    }
    conns[c].req = r;
    conns[c].got = 0;
    q->tries++;
    if (q->sent < 0) q->sent = mono_us() - start_us;
    ssize_t w = send(conns[c].fd, out, (size_t)n, MSG_NOSIGNAL);
    if (w != n) { /* a few hundred bytes always fit an empty socket buffer: the connection is gone */
        conns[c].req = -1;
        close_conn(c);
        if (q->tries < 2) dispatch(r);
        else finish(r, 0, 2);
    }
}

static void dispatch(int r) {
    int c;
    if (nidle > 0) {
        c = idle[--nidle];
    } else if (nconn < conn_max) {
        c = open_conn();
        if (c < 0) {
            finish(r, 0, 2);
            return;
        }
    } else {
        waitq[wq_tail++ % wq_cap] = r;
        return;
    }
    send_on(c, r);
}

static void release(int c) {
    conns[c].req = -1;
    if (wq_head < wq_tail) send_on(c, waitq[wq_head++ % wq_cap]);
    else idle[nidle++] = c;
}

/* One whole answer at the front of the buffer: its status, shed flag and length consumed; 0 if incomplete. */
static int parse_answer(Conn *cn, int *status, int *shed) {
    char *end = memmem(cn->buf, cn->len, "\r\n\r\n", 4);
    if (!end) return 0;
    size_t head = (size_t)(end - cn->buf) + 4;
    long length = 0;
    *shed = 0;
    for (char *p = cn->buf; p < end;) {
        char *nl = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
        if (!nl) break;
        if ((size_t)(nl - p) > 15 && strncasecmp(p, "content-length:", 15) == 0) length = strtol(p + 15, NULL, 10);
        else if ((size_t)(nl - p) > 17 && strncasecmp(p, "x-retry-after-ms:", 17) == 0) *shed = 1;
        p = nl + 2;
    }
    if (cn->len < head + (size_t)length) return 0;
    *status = cn->len >= 12 ? atoi(cn->buf + 9) : 0;
    size_t used = head + (size_t)length;
    memmove(cn->buf, cn->buf + used, cn->len - used);
    cn->len -= used;
    return 1;
}

static void on_readable(int c) {
    Conn *cn = &conns[c];
    for (;;) {
        ssize_t n = recv(cn->fd, cn->buf + cn->len, BUF_MAX - cn->len, 0);
        if (n > 0) {
            cn->len += (size_t)n;
            cn->got = 1;
            int status, shed;
            while (cn->req >= 0 && parse_answer(cn, &status, &shed)) {
                int r = cn->req;
                finish(r, status, shed ? 1 : 0);
                release(c);
            }
            if (cn->len == BUF_MAX) { /* an answer larger than the buffer: not the gateway's; lose it */
                int r = cn->req;
                cn->req = -1;
                close_conn(c);
                if (r >= 0) finish(r, 0, 2);
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        /* closed or broken: a request not yet answered at all goes again once on a new connection */
        int r = cn->req, safe = !cn->got;
        cn->req = -1;
        for (int i = 0; i < nidle; i++)
            if (idle[i] == c) {
                idle[i] = idle[--nidle];
                break;
            }
        close_conn(c);
        if (r >= 0) {
            if (safe && reqs[r].tries < 2) dispatch(r);
            else finish(r, 0, 2);
        }
        return;
    }
}

static char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)n + 1);
    if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) die("read");
    data[n] = 0;
    fclose(f);
    *size = (size_t)n;
    return data;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: loadgen SCHEDULE OUTPUT PORT CONNECTIONS TIMEOUT_US START_US\n");
        return 2;
    }
    port = atoi(argv[3]);
    conn_max = atoi(argv[4]);
    timeout_us = atoll(argv[5]);
    start_us = atoll(argv[6]);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)conn_max + 64) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)conn_max + 64 ? rl.rlim_max : (rlim_t)conn_max + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    size_t size;
    char *text = read_file(argv[1], &size);
    int cap = 1024;
    reqs = malloc(sizeof(Req) * (size_t)cap);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "POOL ", 5) == 0) {
            int k = atoi(line + 5);
            int n = atoi(strchr(line + 5, ' ') + 1);
            for (int i = 0; i < n; i++) pool_push(k, strtok(NULL, "\n"));
            continue;
        }
        if (nreq == cap) {
            cap *= 2;
            reqs = realloc(reqs, sizeof(Req) * (size_t)cap);
            if (!reqs) die("realloc");
        }
        Req *q = &reqs[nreq++];
        memset(q, 0, sizeof *q);
        char *p = line;
        q->t = strtoll(p, &p, 10);
        q->kind = (int)strtol(p, &p, 10);
        while (*p == ' ') p++;
        q->path = p;
        char *sp = strchr(p, ' ');
        q->auth = sp ? sp + 1 : p + strlen(p);
        if (sp) *sp = 0;
        q->dispatched = q->sent = q->done = -1;
    }
    conns = calloc((size_t)conn_max, sizeof(Conn));
    idle = malloc(sizeof(int) * (size_t)conn_max);
    wq_cap = nreq + 1;
    waitq = malloc(sizeof(int) * (size_t)wq_cap);
    ep = epoll_create1(0);
    if (!conns || !idle || !waitq || ep < 0) die("setup");

    struct epoll_event evs[256];
    int next = 0;
    int64_t next_sweep = 0;
    for (;;) {
        int64_t now = mono_us() - start_us;
        while (next < nreq && reqs[next].t <= now) {
            Req *q = &reqs[next];
            q->dispatched = now;
            if (q->kind <= 1) {
                Pool *p = &pools[q->kind];
                if (p->n == 0) {
                    q->flags = 4;
                    next++;
                    continue;
                }
                snprintf(q->order, ID_MAX, "%s", p->ids[--p->n]);
            }
            dispatch(next++);
        }
        if (now >= next_sweep) { /* answers past their deadline are lost; their connections closed */
            next_sweep = now + 50000;
            for (int c = 0; c < nconn;) {
                int r = conns[c].req;
                if (r >= 0 && reqs[r].t + timeout_us <= now) {
                    conns[c].req = -1;
                    close_conn(c); /* moves another connection into slot c: look at it next */
                    finish(r, 0, 2);
                    continue;
                }
                c++;
            }
            while (wq_head < wq_tail && reqs[waitq[wq_head % wq_cap]].t + timeout_us <= now)
                finish(waitq[wq_head++ % wq_cap], 0, 2);
            int busy = 0;
            for (int c = 0; c < nconn; c++) busy |= conns[c].req >= 0;
            if (next >= nreq && !busy && wq_head >= wq_tail) break;
        }
        /* at least a millisecond between rounds: arrivals due meanwhile go out together, late by under a
           millisecond (counted: latency runs from the scheduled time) */
        int wait_ms = 10;
        if (next < nreq) {
            int64_t until = reqs[next].t - (mono_us() - start_us);
            wait_ms = until <= 1000 ? 1 : (int)(until / 1000 < 10 ? until / 1000 : 10);
        }
        int n = epoll_wait(ep, evs, 256, wait_ms);
        for (int i = 0; i < n; i++) {
            int c = (int)evs[i].data.u32;
            if (c < nconn) on_readable(c);
        }
    }
    FILE *out = fopen(argv[2], "wb");
    if (!out) die(argv[2]);
    for (int r = 0; r < nreq; r++) {
        Req *q = &reqs[r];
        int64_t rec[7] = {q->kind, q->t, q->dispatched, q->sent, q->done, q->status, q->flags};
        fwrite(rec, sizeof rec, 1, out);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int64_t trailer[7] = {-1, ru.ru_maxrss, 0, 0, 0, 0, 0};
    fwrite(trailer, sizeof trailer, 1, out);
    fclose(out);
    return 0;
}
