package org.text2data.dist;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.net.Inet6Address;
import java.net.InetAddress;

/**
 * A listening TCP socket bound to one address, opened with the C library (Linux), for c10d's
 * {@code TCPStore} server to take over ({@code masterListenFd}): c10d's own server would listen on every
 * interface, this one listens on the address the user gave only.
 */
final class ListenSocket {
    private static final int AF_INET = 2;
    private static final int AF_INET6 = 10;
    private static final int SOCK_STREAM = 1;
    private static final int SOCK_CLOEXEC = 0x80000;
    private static final int SOL_SOCKET = 1;
    private static final int SO_REUSEADDR = 2;

    private ListenSocket() {
    }

    /** Opens, binds and listens; returns the file descriptor, which the caller owns. */
    static int open(InetAddress address, int port) {
        if (!System.getProperty("os.name", "").toLowerCase(java.util.Locale.ROOT).contains("linux")) {
            throw new IllegalStateException("the rendezvous server binds its socket with Linux's C library; "
                    + "run rank 0 on Linux");
        }
        Linker linker = Linker.nativeLinker();
        var libc = linker.defaultLookup();
        StructLayout state = Linker.Option.captureStateLayout();
        VarHandle errnoHandle = state.varHandle(java.lang.foreign.MemoryLayout.PathElement.groupElement("errno"));
        Linker.Option errno = Linker.Option.captureCallState("errno");
        MethodHandle socket = linker.downcallHandle(libc.find("socket").orElseThrow(), FunctionDescriptor.of(
                ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT), errno);
        MethodHandle setsockopt = linker.downcallHandle(libc.find("setsockopt").orElseThrow(), FunctionDescriptor.of(
                ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                ValueLayout.ADDRESS, ValueLayout.JAVA_INT));
        MethodHandle bind = linker.downcallHandle(libc.find("bind").orElseThrow(), FunctionDescriptor.of(
                ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT), errno);
        MethodHandle listen = linker.downcallHandle(libc.find("listen").orElseThrow(), FunctionDescriptor.of(
                ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT), errno);
        MethodHandle close = linker.downcallHandle(libc.find("close").orElseThrow(), FunctionDescriptor.of(
                ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));
        boolean v6 = address instanceof Inet6Address;
        byte[] ip = address.getAddress();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment st = arena.allocate(state);
            int fd = (int) socket.invokeExact(st, v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                throw new IllegalStateException("socket() failed, errno " + (int) errnoHandle.get(st, 0L));
            }
            MemorySegment one = arena.allocate(ValueLayout.JAVA_INT);
            one.set(ValueLayout.JAVA_INT, 0, 1);
            int ignored = (int) setsockopt.invokeExact(fd, SOL_SOCKET, SO_REUSEADDR, one, 4);
            // sockaddr_in (16 bytes) or sockaddr_in6 (28): family in host order, port in network order
            MemorySegment sa = arena.allocate(v6 ? 28 : 16);
            sa.set(ValueLayout.JAVA_SHORT, 0, (short) (v6 ? AF_INET6 : AF_INET));
            sa.set(ValueLayout.JAVA_BYTE, 2, (byte) (port >>> 8));
            sa.set(ValueLayout.JAVA_BYTE, 3, (byte) port);
            MemorySegment.copy(MemorySegment.ofArray(ip), 0, sa, v6 ? 8 : 4, ip.length);
            if (v6) {
                sa.set(ValueLayout.JAVA_INT, 24, ((Inet6Address) address).getScopeId());
            }
            int rc = (int) bind.invokeExact(st, fd, sa, (int) sa.byteSize());
            if (rc == 0) {
                rc = (int) listen.invokeExact(st, fd, 4096);
            }
            if (rc != 0) {
                int err = (int) errnoHandle.get(st, 0L);
                int ignored2 = (int) close.invokeExact(fd);
                throw new IllegalStateException("could not listen on " + address.getHostAddress() + ":" + port
                        + (err == 98 ? ": the port is in use (pick another MASTER_PORT)" : ", errno " + err));
            }
            return fd;
        } catch (IllegalStateException e) {
            throw e;
        } catch (Throwable e) {
            throw new IllegalStateException("could not open the rendezvous socket: " + e, e);
        }
    }
}
