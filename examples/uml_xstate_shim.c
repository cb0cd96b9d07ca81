/*
 * LD_PRELOAD shim for UML guests (examples/uml-guest.sh, the end-to-end tests): lets Debian's UML 6.1 run on hosts whose XSAVE area
 * is larger than UML 6.1 knows (AVX-512, AMX).
 *
 * UML 6.1 saves a guest process's FP state with PTRACE_GETREGSET(NT_X86_XSTATE) into a buffer of
 * sizeof(struct _xstate) (832 bytes) and restores it with PTRACE_SETREGSET from the same buffer.
 * Reading a prefix works, but Linux (arch/x86/kernel/fpu/regset.c) accepts a write only of the
 * whole XSAVE area, so on such hosts every restore fails with EFAULT and the guest's init dies
 * ("ptrace set fp regs failed, errno = 14"). Later UML kernels size the buffer from CPUID. Here,
 * a short write is completed: read the process's whole area, lay UML's prefix over it, write
 * the whole. Every other ptrace request goes to libc unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define NT_X86_XSTATE 0x202

typedef long (*ptrace_fn)(int, pid_t, void *, void *);

static unsigned char whole_area[1 << 16];

long ptrace(enum __ptrace_request request, ...)
{
	static ptrace_fn real;
	va_list ap;
	pid_t pid;
	void *addr, *data;

	va_start(ap, request);
	pid = va_arg(ap, pid_t);
	addr = va_arg(ap, void *);
	data = va_arg(ap, void *);
	va_end(ap);
	if (!real)
		real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");
	if (request == PTRACE_SETREGSET && (long)addr == NT_X86_XSTATE) {
		struct iovec *prefix = data;
		struct iovec whole = { whole_area, sizeof(whole_area) };

		if (real(PTRACE_GETREGSET, pid, addr, &whole) == 0 && whole.iov_len > prefix->iov_len) {
			memcpy(whole_area, prefix->iov_base, prefix->iov_len);
			return real(PTRACE_SETREGSET, pid, addr, &whole);
		}
	}
	return real(request, pid, addr, data);
}
