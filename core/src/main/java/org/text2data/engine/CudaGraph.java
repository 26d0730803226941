package org.text2data.engine;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import org.text2data.ffi.text2data_h;

/**
 * A captured and instantiated CUDA graph, through libtext2data's thin wrappers of the CUDA runtime's stream
 * capture ({@code t2d_graph_*}): bytedeco's presets map no {@code at::cuda::CUDAGraph}, and the CUDA runtime's own
 * Java bindings are not part of a CPU-only build. Streams are {@code cudaStream_t} handles (see
 * {@link FusedEngine#currentStream}). Not thread-safe.
 */
public final class CudaGraph implements AutoCloseable {

    private MemorySegment exec;

    private CudaGraph(MemorySegment exec) {
        this.exec = exec;
    }

    /**
     * Starts capturing the work enqueued on a stream (global capture mode, as PyTorch's default).
     *
     * @param stream a {@code cudaStream_t} other than the legacy default stream
     * @throws IllegalStateException if the capture cannot start (e.g. the library was built without CUDA)
     */
    public static void beginCapture(long stream) {
        NativeLibrary.require();
        check(text2data_h.t2d_graph_capture_begin(MemorySegment.ofAddress(stream)), "starting a stream capture");
    }

    /**
     * Ends the capture begun on the stream and instantiates its graph.
     *
     * @param stream the capturing stream
     * @return the graph, ready to replay
     * @throws IllegalStateException if the capture was invalidated (something in it was not capturable) or the
     *                               graph cannot be instantiated
     */
    public static CudaGraph endCapture(long stream) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment out = a.allocate(ValueLayout.ADDRESS);
            check(text2data_h.t2d_graph_capture_end(MemorySegment.ofAddress(stream), out), "ending the stream capture");
            return new CudaGraph(out.get(ValueLayout.ADDRESS, 0));
        }
    }

    /**
     * Ends the capture begun on the stream and throws its graph away (after a failure inside it). Errors are
     * ignored: the capture may already be invalid.
     *
     * @param stream the capturing stream
     */
    public static void discardCapture(long stream) {
        text2data_h.t2d_graph_capture_end(MemorySegment.ofAddress(stream), MemorySegment.NULL);
    }

    /**
     * Enqueues one replay on the stream (no host synchronisation).
     *
     * @param stream a {@code cudaStream_t}
     * @throws IllegalStateException if this graph is closed or the launch fails
     */
    public void replay(long stream) {
        if (exec == null) {
            throw new IllegalStateException("the CUDA graph is closed");
        }
        check(text2data_h.t2d_graph_launch(exec, MemorySegment.ofAddress(stream)), "replaying the CUDA graph");
    }

    /** Frees the graph (a replay in flight completes first). Idempotent. */
    @Override
    public void close() {
        if (exec != null) {
            text2data_h.t2d_graph_destroy(exec);
            exec = null;
        }
    }

    private static void check(int rc, String what) {
        if (rc != text2data_h.T2D_OK()) {
            throw new IllegalStateException(what + " failed (code " + rc + "): " + FusedEngine.lastError());
        }
    }
}
