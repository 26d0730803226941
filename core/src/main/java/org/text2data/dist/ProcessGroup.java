package org.text2data.dist;

import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.bytedeco.javacpp.chrono.Milliseconds;
import org.bytedeco.pytorch.AllreduceOptions;
import org.bytedeco.pytorch.Backend;
import org.bytedeco.pytorch.BroadcastOptions;
import org.bytedeco.pytorch.FileStore;
import org.bytedeco.pytorch.GlooDeviceVector;
import org.bytedeco.pytorch.IntOptional;
import org.bytedeco.pytorch.ProcessGroupGloo;
import org.bytedeco.pytorch.ReduceOp;
import org.bytedeco.pytorch.Store;
import org.bytedeco.pytorch.StringVector;
import org.bytedeco.pytorch.TCPStore;
import org.bytedeco.pytorch.TCPStoreOptions;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.Work;
import org.text2data.LibTorch;

/**
 * A group of processes that all-reduce and broadcast tensors with libtorch's c10d: Gloo for CPU tensors,
 * NCCL for CUDA ones (NCCL needs the GPU build of libtorch and is untested so far: no GPU machine has run it).
 *
 * <p>Rendezvous as PyTorch users know it: {@link #fromEnvironment} reads {@code MASTER_ADDR},
 * {@code MASTER_PORT}, {@code RANK}, {@code WORLD_SIZE} (as {@code torchrun} sets them) and meets over
 * c10d's {@code TCPStore}, whose server (rank 0) listens on {@code MASTER_ADDR} only; {@link #file} meets
 * over a shared file ({@code FileStore}, PyTorch's {@code init_method="file://..."}), with no listening
 * socket besides Gloo's own, bound to 127.0.0.1. Before the backend connects, every rank checks that all
 * ranks arrived with the same world size and that no rank is taken twice.
 *
 * <p>Every wait is bounded by the group's timeout (default {@link #DEFAULT_TIMEOUT}): a peer that never
 * arrives, dies or stalls ends the others with an exception naming what happened. Not thread-safe.
 */
public final class ProcessGroup implements AutoCloseable {
    /** The default bound on every wait: rendezvous, each all-reduce, each broadcast. */
    public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(30);

    private static final String PREFIX = "text2data/";

    /** Which c10d backend a group uses. */
    public enum Kind {
        /** Gloo, for CPU tensors. */
        GLOO,
        /** NCCL, for CUDA tensors (needs the GPU build; unverified). */
        NCCL;

        /**
         * Gloo for {@code "cpu"}, NCCL for {@code "cuda"} or {@code "cuda:N"}.
         *
         * @param device a device name as in PyTorch; null means the CPU
         * @return the backend for tensors on that device
         * @throws IllegalArgumentException if the device is neither the CPU nor CUDA
         */
        public static Kind forDevice(String device) {
            if (device == null || device.equals("cpu")) {
                return GLOO;
            }
            if (device.startsWith("cuda")) {
                return NCCL;
            }
            throw new IllegalArgumentException("no process-group backend for device '" + device + "' (cpu or cuda)");
        }
    }

    private final Store store;
    private final Backend backend;
    private final Kind kind;
    private final int rank;
    private final int worldSize;
    private final Duration timeout;
    private boolean broken;
    private boolean closed;

    private ProcessGroup(Store store, Backend backend, Kind kind, int rank, int worldSize, Duration timeout) {
        this.store = store;
        this.backend = backend;
        this.kind = kind;
        this.rank = rank;
        this.worldSize = worldSize;
        this.timeout = timeout;
    }

    /**
     * Joins the group described by the environment, as {@code torchrun} sets it: {@code RANK},
     * {@code WORLD_SIZE}, {@code MASTER_ADDR}, {@code MASTER_PORT}. Rank 0 serves the store on
     * {@code MASTER_ADDR:MASTER_PORT}. {@code GLOO_SOCKET_IFNAME} picks Gloo's interface as in PyTorch;
     * without it Gloo binds the local address that reaches {@code MASTER_ADDR} (127.0.0.1 for a loopback master).
     *
     * @param kind the backend
     * @param timeout the bound on every wait; positive
     * @return this process's membership of the group
     * @throws IllegalArgumentException if a variable is missing or invalid, or the timeout is not positive
     * @throws IllegalStateException if the rendezvous or the backend fails or times out
     */
    public static ProcessGroup fromEnvironment(Kind kind, Duration timeout) {
        return fromEnvironment(System.getenv(), kind, timeout);
    }

    /**
     * {@link #fromEnvironment(Kind, Duration)} with the variables taken from {@code env}.
     *
     * @param env the variables: {@code RANK}, {@code WORLD_SIZE}, {@code MASTER_ADDR}, {@code MASTER_PORT} and
     *     optionally {@code GLOO_SOCKET_IFNAME}
     * @param kind the backend
     * @param timeout the bound on every wait; positive
     * @return this process's membership of the group
     * @throws IllegalArgumentException if a variable is missing or invalid, or the timeout is not positive
     * @throws IllegalStateException if the rendezvous or the backend fails or times out
     */
    public static ProcessGroup fromEnvironment(Map<String, String> env, Kind kind, Duration timeout) {
        int rank = intVar(env, "RANK");
        int world = intVar(env, "WORLD_SIZE");
        String addr = env.get("MASTER_ADDR");
        if (addr == null || addr.isBlank()) {
            throw new IllegalArgumentException("MASTER_ADDR is not set (the address of rank 0's machine, as for torchrun)");
        }
        int port = intVar(env, "MASTER_PORT");
        return tcp(addr, port, rank, world, kind, timeout, env.get("GLOO_SOCKET_IFNAME"));
    }

    /**
     * Joins a group that meets at {@code masterAddr:port} (rank 0 serves the store there, bound to that
     * address only).
     *
     * @param masterAddr the host name or address of rank 0's machine
     * @param port the store's port, 1 to 65535
     * @param rank this process's rank, 0 to {@code worldSize - 1}
     * @param worldSize how many processes the group has, at least 1
     * @param kind the backend
     * @param timeout the bound on every wait; positive
     * @param glooInterface a network interface name for Gloo (PyTorch's {@code GLOO_SOCKET_IFNAME}), or null
     * @return this process's membership of the group
     * @throws IllegalArgumentException if the rank, world size or port is out of range, {@code masterAddr} does not
     *     resolve, or the timeout is not positive
     * @throws IllegalStateException if the store cannot be served or reached, or the rendezvous or the backend
     *     fails or times out
     */
    public static ProcessGroup tcp(String masterAddr, int port, int rank, int worldSize, Kind kind, Duration timeout,
                                   String glooInterface) {
        checkRank(rank, worldSize);
        Duration t = checkTimeout(timeout);
        if (port <= 0 || port > 65535) {
            throw new IllegalArgumentException("MASTER_PORT must be a port number in 1..65535, got " + port);
        }
        InetAddress master;
        try {
            master = InetAddress.getByName(masterAddr);
        } catch (UnknownHostException e) {
            throw new IllegalArgumentException("MASTER_ADDR '" + masterAddr + "' does not resolve", e);
        }
        LibTorch.ensureLoaded();
        TCPStoreOptions opts = new TCPStoreOptions();
        opts.port((short) port);
        opts.isServer(rank == 0);
        opts.waitWorkers(false); // the rendezvous below waits, with clearer messages
        opts.timeout(new Milliseconds(t.toMillis()));
        if (rank == 0) {
            // c10d's own server listens on every interface; bind exactly MASTER_ADDR and hand it the socket
            opts.masterListenFd(new IntOptional(ListenSocket.open(master, port)));
        }
        Store store;
        try {
            store = new TCPStore(master.getHostAddress(), opts);
        } catch (RuntimeException e) {
            throw new IllegalStateException("rank " + rank + ": could not " + (rank == 0 ? "serve" : "reach")
                    + " the rendezvous store at " + masterAddr + ":" + port + " within " + seconds(t) + ": "
                    + firstLine(e.getMessage()), e);
        }
        String host = glooInterface == null || glooInterface.isBlank() ? localAddressTowards(master, port) : null;
        return join(store, rank, worldSize, kind, t, host, glooInterface);
    }

    /**
     * Joins a group that meets over a shared file (c10d's {@code FileStore}): every rank names the same
     * path, which must not exist yet or be left from an earlier run. Gloo binds 127.0.0.1: for processes
     * on this machine.
     *
     * @param storeFile the shared file, the same for every rank
     * @param rank this process's rank, 0 to {@code worldSize - 1}
     * @param worldSize how many processes the group has, at least 1
     * @param kind the backend
     * @param timeout the bound on every wait; positive
     * @return this process's membership of the group
     * @throws IllegalArgumentException if the rank or world size is out of range, or the timeout is not positive
     * @throws IllegalStateException if the rendezvous or the backend fails or times out
     */
    public static ProcessGroup file(Path storeFile, int rank, int worldSize, Kind kind, Duration timeout) {
        checkRank(rank, worldSize);
        Duration t = checkTimeout(timeout);
        LibTorch.ensureLoaded();
        Store store = new FileStore(storeFile.toAbsolutePath().toString(), worldSize);
        store.setTimeout(new Milliseconds(t.toMillis()));
        return join(store, rank, worldSize, kind, t, "127.0.0.1", null);
    }

    private static ProcessGroup join(Store store, int rank, int worldSize, Kind kind, Duration timeout,
                                     String glooHost, String glooInterface) {
        try {
            rendezvous(store, rank, worldSize, timeout);
            Backend backend = kind == Kind.GLOO ? gloo(store, rank, worldSize, timeout, glooHost, glooInterface)
                    : Nccl.create(store, rank, worldSize, timeout);
            return new ProcessGroup(store, backend, kind, rank, worldSize, timeout);
        } catch (RuntimeException e) {
            store.close();
            throw e;
        }
    }

    /**
     * Every rank announces itself and its world size, then waits for all the others: a rank taken twice,
     * a different world size, or a rank missing after {@code timeout} fails here with a message naming it.
     */
    private static void rendezvous(Store store, int rank, int worldSize, Duration timeout) {
        if (store.add(PREFIX + "rank" + rank, 1) > 1) {
            throw new IllegalStateException("rank " + rank + " was taken by another process already: "
                    + "every process needs its own RANK in 0.." + (worldSize - 1));
        }
        store.set(PREFIX + "world" + rank, Integer.toString(worldSize));
        long deadline = System.nanoTime() + timeout.toNanos();
        boolean[] seen = new boolean[worldSize];
        int arrived = 0;
        while (true) {
            for (int r = 0; r <= worldSize; r++) { // r == worldSize: a rank that counts a larger world
                if (r < worldSize && seen[r] || !has(store, PREFIX + "world" + r)) {
                    continue;
                }
                int theirs = Integer.parseInt(store.get_to_str(PREFIX + "world" + r));
                if (theirs != worldSize) {
                    throw new IllegalStateException("WORLD_SIZE differs between processes: rank " + r + " has "
                            + theirs + ", rank " + rank + " (this one) has " + worldSize);
                }
                seen[r] = true;
                arrived++;
            }
            if (arrived == worldSize) {
                return;
            }
            if (System.nanoTime() > deadline) {
                List<Integer> missing = new ArrayList<>();
                for (int r = 0; r < worldSize; r++) {
                    if (!seen[r]) {
                        missing.add(r);
                    }
                }
                throw new IllegalStateException("rank " + rank + ": rank(s) " + missing + " of " + worldSize
                        + " did not arrive within " + seconds(timeout) + " (not started, died, or started with "
                        + "another WORLD_SIZE, store or MASTER_ADDR/MASTER_PORT)");
            }
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted while waiting for the other ranks", e);
            }
        }
    }

    private static boolean has(Store store, String key) {
        try (StringVector keys = new StringVector(key)) {
            return store.check(keys);
        }
    }

    private static Backend gloo(Store store, int rank, int worldSize, Duration timeout, String host, String iface) {
        ProcessGroupGloo.Options opts = new ProcessGroupGloo.Options(new Milliseconds(timeout.toMillis()));
        opts.devices(new GlooDeviceVector(iface != null && !iface.isBlank()
                ? ProcessGroupGloo.createDeviceForInterface(iface)
                : ProcessGroupGloo.createDeviceForHostname(host)));
        try {
            return new ProcessGroupGloo(store, rank, worldSize, opts);
        } catch (RuntimeException e) {
            throw new IllegalStateException("rank " + rank + ": Gloo could not connect all " + worldSize
                    + " ranks within " + seconds(timeout) + ": " + firstLine(e.getMessage()), e);
        }
    }

    /**
     * This process's rank, 0 to {@link #worldSize()} - 1.
     *
     * @return the rank
     */
    public int rank() {
        return rank;
    }

    /**
     * How many processes the group has.
     *
     * @return the world size
     */
    public int worldSize() {
        return worldSize;
    }

    /**
     * The backend: Gloo or NCCL.
     *
     * @return the backend kind
     */
    public Kind kind() {
        return kind;
    }

    /**
     * The bound on every wait.
     *
     * @return the timeout
     */
    public Duration timeout() {
        return timeout;
    }

    /**
     * Sums {@code buffer} over all ranks, in place (one collective call), and waits for it.
     *
     * @param buffer the tensor to sum; on return it holds the sum on every rank
     * @throws IllegalStateException if the group is closed, or the all-reduce fails or times out
     */
    public void allReduceSum(Tensor buffer) {
        checkOpen();
        try (TensorVector v = new TensorVector(buffer); AllreduceOptions o = new AllreduceOptions();
             ReduceOp sum = new ReduceOp(ReduceOp.RedOpType.SUM)) {
            o.reduceOp(sum);
            o.timeout(new Milliseconds(timeout.toMillis()));
            await(backend.allreduce(v, o), "all-reduce");
        }
    }

    /**
     * Overwrites {@code buffer} on every rank with rank {@code root}'s, and waits for it.
     *
     * @param buffer the tensor to send (on {@code root}) or overwrite (on the other ranks)
     * @param root the rank whose tensor is sent
     * @throws IllegalStateException if the group is closed, or the broadcast fails or times out
     */
    public void broadcast(Tensor buffer, int root) {
        checkOpen();
        try (TensorVector v = new TensorVector(buffer); BroadcastOptions o = new BroadcastOptions()) {
            o.rootRank(root);
            o.timeout(new Milliseconds(timeout.toMillis()));
            await(backend.broadcast(v, o), "broadcast");
        }
    }

    /**
     * Waits until every rank has reached this point.
     *
     * @throws IllegalStateException if the group is closed, or the barrier fails or times out
     */
    public void barrier() {
        checkOpen();
        await(backend.barrier(), "barrier");
    }

    private void await(Work work, String what) {
        try (work) {
            work._wait(new Milliseconds(timeout.toMillis()));
        } catch (RuntimeException e) {
            broken = true;
            throw new IllegalStateException("rank " + rank + ": " + what + " failed (a peer died, stalled or left; "
                    + "timeout " + seconds(timeout) + "): " + firstLine(e.getMessage()), e);
        }
    }

    /**
     * Leaves the group. After a failed collective the backend is left to the process's end rather than
     * shut down, since shutting down waits for peers that are gone.
     */
    @Override
    public void close() {
        if (!closed) {
            closed = true;
            if (!broken) {
                backend.close();
                store.close();
            }
        }
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("this ProcessGroup is closed");
        }
    }

    static void checkRank(int rank, int worldSize) {
        if (worldSize < 1) {
            throw new IllegalArgumentException("WORLD_SIZE must be at least 1, got " + worldSize);
        }
        if (rank < 0 || rank >= worldSize) {
            throw new IllegalArgumentException("RANK must be in 0.." + (worldSize - 1) + " for WORLD_SIZE "
                    + worldSize + ", got " + rank);
        }
    }

    private static Duration checkTimeout(Duration t) {
        if (t == null || t.isNegative() || t.isZero()) {
            throw new IllegalArgumentException("the timeout must be positive, got " + t);
        }
        return t;
    }

    private static int intVar(Map<String, String> env, String name) {
        String v = env.get(name);
        if (v == null || v.isBlank()) {
            throw new IllegalArgumentException(name + " is not set (as torchrun sets it: RANK, WORLD_SIZE, "
                    + "MASTER_ADDR, MASTER_PORT)");
        }
        try {
            return Integer.parseInt(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(name + " must be an integer, got '" + v + "'");
        }
    }

    /** The local address whose interface routes to {@code master} (no packet is sent). */
    private static String localAddressTowards(InetAddress master, int port) {
        if (master.isLoopbackAddress()) {
            return "127.0.0.1";
        }
        try (DatagramSocket s = new DatagramSocket()) {
            s.connect(master, port);
            return s.getLocalAddress().getHostAddress();
        } catch (java.io.IOException e) {
            throw new IllegalStateException("no local interface reaches MASTER_ADDR " + master.getHostAddress()
                    + "; set GLOO_SOCKET_IFNAME", e);
        }
    }

    static String seconds(Duration d) {
        return d.toMillis() % 1000 == 0 ? d.toSeconds() + " s" : d.toMillis() + " ms";
    }

    static String firstLine(String message) {
        if (message == null) {
            return "(no message)";
        }
        int nl = message.indexOf('\n');
        return (nl < 0 ? message : message.substring(0, nl)).trim();
    }
}
