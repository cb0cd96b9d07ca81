/* Load generator for uml_switch-compatible switches (umlswitch, uml_switch) and vde_switch.
 *
 * Attaches ports exactly as a client does, lets the switch learn, then runs one of three
 * patterns and prints one JSON line. Single-threaded; one poll() loop.
 *
 *   closed    senders push frames to receivers keeping at most WINDOW frames outstanding per
 *             sender (back-pressure); what is outstanding after 20 ms of silence is written off.
 *   open      senders push as fast as the switch's socket accepts them; the same thread drains
 *             the receivers between bursts. Counts what was accepted and what arrived.
 *   pingpong  two ports bounce one frame; round-trip times, optionally with a gap between them.
 *
 *   uml mode: SOCK_STREAM to CTL, a SOCK_DGRAM data socket bound to a 108-byte abstract name with
 *             the full sockaddr length (110), a 124-byte v3 request, a 110-byte reply, then
 *             sendto(reply, 110) per frame -- as UML's daemon transport does.
 *   vde mode: CTL is vde_switch's directory; connect to DIR/ctl, data socket bound to a pathname
 *             in DIR, packed v3 request + description, connect the data socket to the reply path.
 *   stream mode: CTL is a umlswitch --stream unix:PATH listener; one SOCK_STREAM connection per
 *             port and nothing else, each frame preceded by its 4-byte big-endian length, as
 *             QEMU's -netdev stream. A write the kernel takes only in part is completed at once
 *             (blocking on poll), so records stay whole; the receive side reassembles records
 *             across reads.
 *
 * usage: loadgen closed MODE CTL PAIRS BCAST SIZE SECONDS WINDOW SWITCHPID IDLE MACS
 *        loadgen open MODE CTL PAIRS BCAST SIZE SECONDS SWITCHPID
 *        loadgen pingpong MODE CTL SIZE SECONDS GAP_US
 *   MODE   uml, vde or stream (above)
 *   PAIRS  unicast sender/receiver pairs (BCAST=0), or broadcast receivers (BCAST=1, 1 sender)
 *   IDLE   extra idle ports attached first (time to attach them is reported)
 *   MACS   source MACs the idle ports make the switch learn (spread over them) before the run
 *   GAP_US pause between round trips (0: back to back)
 *
 * Open loop and POLLOUT: a unix datagram socket that is not connected reports POLLOUT whenever
 * its own send buffer has room, even while sendto() to a full receiver fails with EAGAIN, so
 * poll() cannot wait for the switch there. Connected to the switch's socket, poll() reports
 * POLLOUT only once that receiver has room (the kernel queues the sender on the receiver's
 * wait queue). So the open loop connect()s each sender's data socket to the switch's reply
 * address. That changes nothing the switch sees: it still gets datagrams from the same bound
 * address, and the limits on the switch's receive queue are the same as for sendto(). The
 * receivers stay unconnected, as UML's data socket is, so the switch's sends to them meet the
 * same max_dgram_qlen limit as sends to a guest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0xfeedface
#define SUNLEN 110

struct port {
    int ctl, data;
    struct sockaddr_un peer; /* switch's data address (uml mode) */
    int connected;            /* vde mode: data socket connected */
    char path[108];           /* vde mode: our own socket file */
    unsigned char mac[6];
    long long sent, recvd;
    unsigned char *rbuf;      /* stream mode: bytes of records not yet complete */
    size_t rlen;
};

#define RBUF (1 << 18)

static const char *mode, *ctlpath;
static int vde, stream;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void set_mac(struct port *p, int idx) {
    p->mac[0] = 0x02;
    p->mac[1] = 0x4c;
    p->mac[2] = 0x47;
    p->mac[3] = (idx >> 16) & 0xff;
    p->mac[4] = (idx >> 8) & 0xff;
    p->mac[5] = idx & 0xff;
}

static void attach_stream(struct port *p, int idx) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", ctlpath);
    p->ctl = -1;
    p->data = socket(AF_UNIX, SOCK_STREAM, 0);
    if (p->data < 0) die("socket stream");
    if (connect(p->data, (struct sockaddr *)&a, sizeof a) < 0) die("connect stream");
    int fl = fcntl(p->data, F_GETFL);
    fcntl(p->data, F_SETFL, fl | O_NONBLOCK);
    p->connected = 1;
    p->rbuf = malloc(RBUF);
    if (!p->rbuf) die("malloc");
    set_mac(p, idx);
}

static void attach(struct port *p, int idx) {
    if (stream) {
        attach_stream(p, idx);
        return;
    }
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    p->ctl = socket(AF_UNIX, SOCK_STREAM, 0);
    if (p->ctl < 0) die("socket");
    if (vde) snprintf(a.sun_path, sizeof a.sun_path, "%s/ctl", ctlpath);
    else snprintf(a.sun_path, sizeof a.sun_path, "%s", ctlpath);
    if (connect(p->ctl, (struct sockaddr *)&a, SUNLEN) < 0) die("connect ctl");
    p->data = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (p->data < 0) die("socket dgram");
    struct sockaddr_un me;
    memset(&me, 0, sizeof me);
    me.sun_family = AF_UNIX;
    if (vde) {
        snprintf(me.sun_path, sizeof me.sun_path, "%s/.lg%d-%d", ctlpath, getpid(), idx);
        unlink(me.sun_path);
        snprintf(p->path, sizeof p->path, "%s", me.sun_path);
    } else {
        /* abstract: NUL, then a name, then zero padding; bound with the full length like UML */
        snprintf(me.sun_path + 1, sizeof me.sun_path - 1, "loadgen-%d-%d", getpid(), idx);
    }
    if (bind(p->data, (struct sockaddr *)&me, SUNLEN) < 0) die("bind data");
    unsigned char req[256];
    memset(req, 0, sizeof req);
    uint32_t w = MAGIC;
    memcpy(req, &w, 4);
    w = 3;
    memcpy(req + 4, &w, 4);
    memcpy(req + 12, &me, SUNLEN);
    size_t len = 124;
    if (vde) {
        const char *d = "loadgen";
        memcpy(req + 122, d, strlen(d));
        len = 122 + strlen(d);
    }
    if (write(p->ctl, req, len) != (ssize_t)len) die("write request");
    size_t got = 0;
    while (got < SUNLEN) {
        ssize_t n = read(p->ctl, (char *)&p->peer + got, SUNLEN - got);
        if (n <= 0) die("read reply");
        got += n;
    }
    if (vde) {
        if (connect(p->data, (struct sockaddr *)&p->peer, SUNLEN) < 0) die("connect data");
        p->connected = 1;
        unlink(p->path);
    }
    int fl = fcntl(p->data, F_GETFL);
    fcntl(p->data, F_SETFL, fl | O_NONBLOCK);
    set_mac(p, idx);
}

/* open loop: send() to the switch's address, so that poll() reports when it has room */
static void connect_to_switch(struct port *p) {
    if (p->connected) return;
    if (connect(p->data, (struct sockaddr *)&p->peer, SUNLEN) < 0) die("connect data");
    p->connected = 1;
}

/* stream mode: the length, then the frame, in one sendmsg; a partial write is completed */
static int send_record(struct port *p, const unsigned char *frame, size_t size) {
    unsigned char hdr[4] = {size >> 24, (size >> 16) & 0xff, (size >> 8) & 0xff, size & 0xff};
    struct iovec iov[2] = {{hdr, 4}, {(void *)frame, size}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    ssize_t n = sendmsg(p->data, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN) return 0;
        die("send stream");
    }
    size_t done = n, total = size + 4;
    while (done < total) {
        struct pollfd pw = {p->data, POLLOUT, 0};
        poll(&pw, 1, 100);
        const unsigned char *from = done < 4 ? hdr + done : frame + (done - 4);
        size_t len = done < 4 ? 4 - done : total - done;
        n = send(p->data, from, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN) continue;
            die("send stream");
        }
        done += n;
    }
    return 1;
}

static int send_frame(struct port *p, const unsigned char *frame, size_t size) {
    if (stream) return send_record(p, frame, size);
    ssize_t n;
    if (p->connected) n = send(p->data, frame, size, MSG_DONTWAIT);
    else n = sendto(p->data, frame, size, MSG_DONTWAIT, (struct sockaddr *)&p->peer, SUNLEN);
    if (n < 0) {
        if (errno == EAGAIN || errno == ENOBUFS) return 0;
        die("send");
    }
    return 1;
}

static void build(unsigned char *f, size_t size, const unsigned char *dst, const unsigned char *src) {
    memset(f, 0, size);
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = 0x88;
    f[13] = 0xb5;
}

/* Receive everything pending on p; returns frames read. */
/* stream mode: read what is there and count the complete records */
static long drain_stream(struct port *p) {
    long n = 0;
    for (;;) {
        ssize_t got = recv(p->data, p->rbuf + p->rlen, RBUF - p->rlen, MSG_DONTWAIT);
        if (got <= 0) break;
        p->rlen += got;
        size_t off = 0;
        while (p->rlen - off >= 4) {
            const unsigned char *h = p->rbuf + off;
            size_t len = ((size_t)h[0] << 24) | (h[1] << 16) | (h[2] << 8) | h[3];
            if (p->rlen - off < 4 + len) break;
            off += 4 + len;
            n++;
        }
        memmove(p->rbuf, p->rbuf + off, p->rlen - off);
        p->rlen -= off;
    }
    p->recvd += n;
    return n;
}

static long drain(struct port *p) {
    if (stream) return drain_stream(p);
    static unsigned char buf[65536];
    long n = 0;
    while (recv(p->data, buf, sizeof buf, MSG_DONTWAIT) >= 0) n++;
    p->recvd += n;
    return n;
}

static long long cpu_ticks(int pid) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *s = strrchr(buf, ')');
    if (!s) return -1;
    unsigned long long ut = 0, st = 0;
    /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

static void settle(struct port *ports, int n, double secs) {
    double end = now() + secs;
    while (now() < end) {
        for (int i = 0; i < n; i++) drain(&ports[i]);
        usleep(2000);
    }
}

struct rig {
    struct port *ports, *idlep, *snd, *rcv;
    int nsend, nrecv, total, fanout, bcast;
    double attach_idle_s;
};

/* Attach IDLE idle ports, the senders and the receivers; make the switch learn every port's MAC
 * (and MACS more source addresses from the idle ports); zero the counters. */
static struct rig setup(int pairs, int bcast, int idle, int macs) {
    struct rig r;
    r.bcast = bcast;
    r.nsend = bcast ? 1 : pairs;
    r.nrecv = pairs;
    r.fanout = bcast ? pairs : 1;
    r.total = idle + r.nsend + r.nrecv;

    struct rlimit rl = {65536, 65536};
    setrlimit(RLIMIT_NOFILE, &rl);
    r.ports = calloc(r.total, sizeof *r.ports);
    r.idlep = r.ports, r.snd = r.ports + idle, r.rcv = r.ports + idle + r.nsend;

    double t = now();
    for (int i = 0; i < idle; i++) attach(&r.idlep[i], 100000 + i);
    r.attach_idle_s = now() - t;
    for (int i = 0; i < r.nsend; i++) attach(&r.snd[i], i);
    for (int i = 0; i < r.nrecv; i++) attach(&r.rcv[i], 1000 + i);

    unsigned char frame[64];
    /* receivers announce themselves (to a sender's MAC, so the frame floods once) */
    for (int i = 0; i < r.nrecv; i++) {
        build(frame, 64, r.snd[0].mac, r.rcv[i].mac);
        while (!send_frame(&r.rcv[i], frame, 64)) usleep(1000);
    }
    for (int i = 0; i < r.nsend; i++) {
        build(frame, 64, r.rcv[0].mac, r.snd[i].mac);
        while (!send_frame(&r.snd[i], frame, 64)) usleep(1000);
    }
    settle(r.ports, r.total, 0.2);
    /* idle ports teach the switch MACS source addresses (frames go to receiver 0) */
    for (int m = 0; m < macs && idle > 0; m++) {
        struct port *p = &r.idlep[m % idle];
        unsigned char src[6] = {0x02, 0x4d, (m >> 16) & 0xff, (m >> 8) & 0xff, m & 0xff, 0x01};
        build(frame, 64, r.rcv[0].mac, src);
        while (!send_frame(p, frame, 64)) drain(&r.rcv[0]);
        if (m % 8 == 0) drain(&r.rcv[0]);
    }
    if (macs) settle(r.ports, r.total, 0.3);
    for (int i = 0; i < r.total; i++) r.ports[i].sent = r.ports[i].recvd = 0;
    return r;
}

static void cleanup(struct rig *r) {
    for (int i = 0; i < r->total; i++)
        if (vde) unlink(r->ports[i].path);
}

/* One frame per sender, to its receiver (or broadcast), STRIDE bytes apart. */
static unsigned char *sender_frames(struct rig *r, size_t size, size_t *stride) {
    static const unsigned char bcast_mac[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    *stride = size > 2048 ? size : 2048;
    unsigned char *frames = malloc((size_t)r->nsend * *stride);
    for (int i = 0; i < r->nsend; i++)
        build(frames + (size_t)i * *stride, size, r->bcast ? bcast_mac : r->rcv[i].mac,
              r->snd[i].mac);
    return frames;
}

/* Let the last frames arrive: read the receivers (their pollfds) for 0.2 s. */
static void final_drain(struct pollfd *pfd, struct port *rcv, int nrecv) {
    double dend = now() + 0.2;
    while (now() < dend) {
        if (poll(pfd, nrecv, 20) > 0)
            for (int i = 0; i < nrecv; i++) if (pfd[i].revents) drain(&rcv[i]);
    }
}

static void run_closed(struct rig *rig, size_t size, double secs, int window, int spid, int idle,
                       int macs) {
    struct port *snd = rig->snd, *rcv = rig->rcv;
    int nsend = rig->nsend, nrecv = rig->nrecv, bcast = rig->bcast;
    size_t stride;
    unsigned char *bigframes = sender_frames(rig, size, &stride);

    struct pollfd *pfd = calloc(nrecv, sizeof *pfd);
    for (int i = 0; i < nrecv; i++) pfd[i].fd = rcv[i].data, pfd[i].events = POLLIN;

    double warm = 0.3, start = now(), t0 = start + warm, t1 = t0 + secs;
    long long sent0 = -1, recv0 = 0, ticks0 = 0, sent1 = 0, recv1 = 0, ticks1 = 0;
    long long lost_windows = 0;
    double m0 = 0, m1 = 0;
    for (;;) {
        double tn = now();
        if (sent0 < 0 && tn >= t0) {
            sent0 = recv0 = 0;
            for (int i = 0; i < nsend; i++) sent0 += snd[i].sent;
            for (int i = 0; i < nrecv; i++) recv0 += rcv[i].recvd;
            ticks0 = cpu_ticks(spid);
            m0 = tn;
        }
        if (tn >= t1) {
            for (int i = 0; i < nsend; i++) sent1 += snd[i].sent;
            for (int i = 0; i < nrecv; i++) recv1 += rcv[i].recvd;
            ticks1 = cpu_ticks(spid);
            m1 = tn;
            break;
        }
        /* outstanding = what a sender sent minus what its receivers got */
        for (int i = 0; i < nsend; i++) {
            struct port *s = &snd[i];
            unsigned char *f = bigframes + (size_t)i * stride;
            for (;;) {
                long long got = 0;
                /* a receiver's "sent" field holds frames written off as lost (see below) */
                if (bcast) {
                    long long mn = -1;
                    for (int r = 0; r < nrecv; r++)
                        if (mn < 0 || rcv[r].recvd + rcv[r].sent < mn) mn = rcv[r].recvd + rcv[r].sent;
                    got = mn;
                } else got = rcv[i].recvd + rcv[i].sent;
                if (s->sent - got >= window) break;
                if (!send_frame(s, f, size)) break;
                s->sent++;
            }
        }
        int r = poll(pfd, nrecv, 20);
        if (r == 0) {
            /* nothing for 20 ms: what is outstanding is lost; reopen the windows */
            lost_windows++;
            for (int i = 0; i < nsend; i++) {
                if (bcast) for (int k = 0; k < nrecv; k++) rcv[k].sent = snd[i].sent - rcv[k].recvd;
                else rcv[i].sent = snd[i].sent - rcv[i].recvd;
            }
            continue;
        }
        for (int i = 0; i < nrecv; i++)
            if (pfd[i].revents) drain(&rcv[i]);
    }
    final_drain(pfd, rcv, nrecv);
    long long sent_all = 0, recv_all = 0;
    for (int i = 0; i < nsend; i++) sent_all += snd[i].sent;
    for (int i = 0; i < nrecv; i++) recv_all += rcv[i].recvd;
    long long expected = sent_all * rig->fanout, real_recv = recv_all;
    double el = m1 - m0;
    printf("{\"mode\":\"%s\",\"pairs\":%d,\"bcast\":%d,\"size\":%zu,\"idle\":%d,\"macs\":%d,"
           "\"attach_idle_s\":%.4f,\"secs\":%.4f,\"sent\":%lld,\"delivered\":%lld,"
           "\"expected_all\":%lld,\"delivered_all\":%lld,\"cpu_ticks\":%lld,\"hz\":%ld,"
           "\"stalls\":%lld}\n",
           mode, nrecv, bcast, size, idle, macs, rig->attach_idle_s, el, sent1 - sent0,
           recv1 - recv0, expected, real_recv, ticks1 - ticks0, sysconf(_SC_CLK_TCK),
           lost_windows);
}

/* Counters at one instant of the open loop. */
struct snap {
    double t, self_cpu;
    long long sent, recvd, ticks;
};

static double self_cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* prompt readers: the receivers' counts, kept by the reader process in shared memory */
static volatile long long *prompt_recvd;

static struct snap take_snap(struct rig *r, int spid) {
    struct snap s = {now(), self_cpu_seconds(), 0, 0, cpu_ticks(spid)};
    for (int i = 0; i < r->nsend; i++) s.sent += r->snd[i].sent;
    for (int i = 0; i < r->nrecv; i++) s.recvd += prompt_recvd ? prompt_recvd[i] : r->rcv[i].recvd;
    return s;
}

/* The prompt readers: a process of its own that reads every receiver as soon as a frame is
 * there (as a guest on a CPU of its own does), until END; counts go to shared memory. */
static pid_t start_prompt_readers(struct rig *rig, double end) {
    int nrecv = rig->nrecv;
    prompt_recvd = mmap(NULL, sizeof(long long) * nrecv, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (prompt_recvd == MAP_FAILED) die("mmap");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid > 0) return pid;
    struct pollfd *pfd = calloc(nrecv, sizeof *pfd);
    for (int i = 0; i < nrecv; i++) pfd[i].fd = rig->rcv[i].data, pfd[i].events = POLLIN;
    while (now() < end) {
        if (poll(pfd, nrecv, 20) > 0)
            for (int i = 0; i < nrecv; i++)
                if (pfd[i].revents) drain(&rig->rcv[i]), prompt_recvd[i] = rig->rcv[i].recvd;
    }
    _exit(0);
}

/* Frames a sender sends before the loop looks at the receivers again: small, so that the
 * receivers are read while the switch forwards (a receiver's queue holds max_dgram_qlen). */
#define OPEN_BURST 8

static void run_open(struct rig *rig, size_t size, double secs, int spid, int prompt) {
    struct port *snd = rig->snd, *rcv = rig->rcv;
    int nsend = rig->nsend, nrecv = rig->nrecv, nfd = nsend + nrecv;
    size_t stride;
    unsigned char *frames = sender_frames(rig, size, &stride);
    int *blocked = calloc(nsend, sizeof *blocked);
    struct pollfd *pfd = calloc(nfd, sizeof *pfd); /* senders, then receivers */
    for (int i = 0; i < nsend; i++) connect_to_switch(&snd[i]), pfd[i].fd = snd[i].data;
    for (int i = 0; i < nrecv; i++) pfd[nsend + i].fd = rcv[i].data, pfd[nsend + i].events = POLLIN;

    double t0 = now() + 0.3, t1 = t0 + secs;
    struct snap a = {0}, b = {0};
    int measuring = 0;
    long long refused = 0; /* sends that met EAGAIN */
    pid_t readers = prompt ? start_prompt_readers(rig, t1 + 0.3) : 0;
    if (prompt) nfd = nsend; /* the readers' process reads the receivers */
    for (;;) {
        double tn = now();
        if (!measuring && tn >= t0) a = take_snap(rig, spid), measuring = 1;
        if (tn >= t1) {
            b = take_snap(rig, spid);
            break;
        }
        int nblocked = 0;
        for (int i = 0; i < nsend; i++) {
            for (int k = 0; k < OPEN_BURST && !blocked[i]; k++) {
                if (send_frame(&snd[i], frames + (size_t)i * stride, size)) snd[i].sent++;
                else blocked[i] = 1, refused++;
            }
            pfd[i].events = blocked[i] ? POLLOUT : 0;
            nblocked += blocked[i];
        }
        /* wait only when no sender can send; otherwise just look */
        if (poll(pfd, nfd, nblocked == nsend ? 5 : 0) < 0 && errno != EINTR) die("poll");
        for (int i = 0; i < nsend; i++)
            if (pfd[i].revents & POLLOUT) blocked[i] = 0;
        for (int i = 0; i < nrecv && !prompt; i++)
            if (pfd[nsend + i].revents) drain(&rcv[i]);
    }
    if (prompt) waitpid(readers, NULL, 0);
    else final_drain(pfd + nsend, rcv, nrecv);
    struct snap end = take_snap(rig, spid);
    double el = b.t - a.t;
    printf("{\"mode\":\"%s\",\"pairs\":%d,\"bcast\":%d,\"size\":%zu,\"secs\":%.4f,"
           "\"sent\":%lld,\"delivered\":%lld,\"expected_all\":%lld,\"delivered_all\":%lld,"
           "\"cpu_ticks\":%lld,\"hz\":%ld,\"gen_cpu\":%.4f,\"refused\":%lld}\n",
           mode, nrecv, rig->bcast, size, el, b.sent - a.sent, b.recvd - a.recvd,
           end.sent * rig->fanout, end.recvd, b.ticks - a.ticks, sysconf(_SC_CLK_TCK),
           (b.self_cpu - a.self_cpu) / el, refused);
}

#define PP_WARMUP 10        /* round trips not counted */
#define PP_TIMEOUT_MS 1000  /* a leg not back by then is lost */

/* Wait for one frame on P; 0 if none came in PP_TIMEOUT_MS. */
static int await_frame(struct port *p) {
    static unsigned char buf[65536];
    struct pollfd pfd = {.fd = p->data, .events = POLLIN};
    if (stream) { /* a record may come in pieces */
        long long before = p->recvd;
        double deadline = now() + PP_TIMEOUT_MS / 1000.0;
        while (p->recvd == before) {
            int ms = (int)((deadline - now()) * 1000);
            if (ms <= 0) return 0;
            if (poll(&pfd, 1, ms) < 0) die("poll");
            drain_stream(p);
        }
        return 1;
    }
    int r = poll(&pfd, 1, PP_TIMEOUT_MS);
    if (r < 0) die("poll");
    if (r == 0) return 0;
    if (recv(p->data, buf, sizeof buf, MSG_DONTWAIT) < 0) die("recv");
    p->recvd++;
    return 1;
}

static int by_value(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Nearest-rank percentile Q (0..1) of N sorted values. */
static double percentile(const double *sorted, long n, double q) {
    long rank = (long)(q * n + 0.999999);
    if (rank < 1) rank = 1;
    return sorted[(rank > n ? n : rank) - 1];
}

static void run_pingpong(size_t size, double secs, long gap_us) {
    struct rig rig = setup(1, 0, 0, 0);
    struct port *a = &rig.snd[0], *b = &rig.rcv[0];
    unsigned char *fa = malloc(size), *fb = malloc(size);
    build(fa, size, b->mac, a->mac);
    build(fb, size, a->mac, b->mac);
    struct timespec gap = {gap_us / 1000000, (gap_us % 1000000) * 1000};
    long n = 0, cap = 4096, lost = 0;
    double *rtt = malloc(cap * sizeof *rtt), end = 0;
    for (long i = 0;; i++) {
        if (i == PP_WARMUP) end = now() + secs;
        if (i >= PP_WARMUP && now() >= end) break;
        double t = now();
        while (!send_frame(a, fa, size)) usleep(100);
        int back = await_frame(b);
        if (back) {
            while (!send_frame(b, fb, size)) usleep(100);
            back = await_frame(a);
        }
        double us = (now() - t) * 1e6;
        if (!back) {
            lost++;
            drain(a), drain(b);
        } else if (i >= PP_WARMUP) {
            if (n == cap) rtt = realloc(rtt, (cap *= 2) * sizeof *rtt);
            rtt[n++] = us;
        }
        if (gap_us) nanosleep(&gap, NULL);
    }
    if (n == 0) {
        fprintf(stderr, "loadgen: no round trip came back\n");
        exit(1);
    }
    qsort(rtt, n, sizeof *rtt, by_value);
    printf("{\"mode\":\"%s\",\"size\":%zu,\"gap_us\":%ld,\"n\":%ld,\"lost\":%ld,"
           "\"min_us\":%.2f,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"max_us\":%.2f}\n",
           mode, size, gap_us, n, lost, rtt[0], percentile(rtt, n, 0.5),
           percentile(rtt, n, 0.9), percentile(rtt, n, 0.99), rtt[n - 1]);
    cleanup(&rig);
}

static int usage(void) {
    fprintf(stderr,
            "usage: loadgen closed MODE CTL PAIRS BCAST SIZE SECONDS WINDOW SWITCHPID IDLE MACS\n"
            "       loadgen open MODE CTL PAIRS BCAST SIZE SECONDS SWITCHPID\n"
            "       loadgen prompt MODE CTL PAIRS BCAST SIZE SECONDS SWITCHPID\n"
            "       loadgen pingpong MODE CTL SIZE SECONDS GAP_US\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *pattern = argc > 1 ? argv[1] : "";
    if (argc < 4) return usage();
    mode = argv[2];
    ctlpath = argv[3];
    vde = strcmp(mode, "vde") == 0;
    stream = strcmp(mode, "stream") == 0;
    if (strcmp(pattern, "closed") == 0 && argc == 12) {
        int idle = atoi(argv[10]), macs = atoi(argv[11]);
        struct rig rig = setup(atoi(argv[4]), atoi(argv[5]), idle, macs);
        run_closed(&rig, atoi(argv[6]), atof(argv[7]), atoi(argv[8]), atoi(argv[9]), idle, macs);
        cleanup(&rig);
    } else if ((strcmp(pattern, "open") == 0 || strcmp(pattern, "prompt") == 0) && argc == 9) {
        struct rig rig = setup(atoi(argv[4]), atoi(argv[5]), 0, 0);
        run_open(&rig, atoi(argv[6]), atof(argv[7]), atoi(argv[8]), pattern[0] == 'p');
        cleanup(&rig);
    } else if (strcmp(pattern, "pingpong") == 0 && argc == 7) {
        run_pingpong(atoi(argv[4]), atof(argv[5]), atol(argv[6]));
    } else {
        return usage();
    }
    return 0;
}
