package org.text2data;

import org.bytedeco.javacpp.Pointer;
import org.bytedeco.pytorch.cuda.CUDAStream;
import org.bytedeco.pytorch.cuda.DeviceAssertionsDataVectorCUDAKernelLaunchInfoVectorPair;
import org.bytedeco.pytorch.cuda.MemPool;
import org.bytedeco.pytorch.cuda.StreamFilter;
import org.bytedeco.pytorch.global.torch_cuda;
import org.text2data.engine.FusedEngine;

/**
 * libtorch's side of a CUDA-graph capture, as {@code at::cuda::CUDAGraph} does it: a side stream, a private
 * memory pool that the capture's allocations come from (so that the memory a graph replays into is never handed
 * to anything else), and the device synchronisations around it. Only {@link CapturedStep} uses it, and only once
 * the parameters are known to be on a CUDA device: this class is the one that loads libtorch's CUDA bindings.
 *
 * <p>bytedeco maps {@code c10::MempoolId_t} (a pair of two integers) with the Java class of another pair; its
 * methods cast the address to {@code MempoolId_t*}, so a pool id is passed as that class over the 16 bytes that
 * {@code MemPool::graph_pool_handle} returned. That object's own deallocator (the other pair's) is switched off.
 */
final class CudaCapture implements AutoCloseable {

    private final byte device;
    private final CUDAStream original;
    private final CUDAStream side;
    private final long sideHandle;
    private DeviceAssertionsDataVectorCUDAKernelLaunchInfoVectorPair pool;
    private StreamFilter filter;
    private boolean allocating;

    /** Waits for the device, then makes libtorch's current stream a side stream from its pool. */
    CudaCapture(int device) {
        this.device = (byte) device;
        torch_cuda.device_synchronize();
        this.original = torch_cuda.getCurrentCUDAStream(this.device);
        CUDAStream s = torch_cuda.getStreamFromPool(false, this.device);
        this.side = s;
        this.sideHandle = FusedEngine.streamHandle(s);
        if (sideHandle == 0L) {
            throw new IllegalStateException("libtorch gave a side stream without a handle");
        }
        torch_cuda.setCurrentCUDAStream(s);
    }

    /** The side stream's cudaStream_t. */
    long stream() {
        return sideHandle;
    }

    /** Waits for the device. */
    void synchronize() {
        torch_cuda.device_synchronize();
    }

    /** From here to {@link #endPool()}, the allocations of work on the side stream come from a private pool. */
    void beginPool() {
        DeviceAssertionsDataVectorCUDAKernelLaunchInfoVectorPair id = MemPool.graph_pool_handle(false);
        id.deallocate(false); // not the pair of vectors its class describes: never deleted as one
        pool = id;
        filter = new SideStreamFilter(sideHandle);
        torch_cuda.beginAllocateToPool(device, pool, filter);
        allocating = true;
    }

    void endPool() {
        if (allocating) {
            allocating = false;
            torch_cuda.endAllocateToPool(device, pool);
        }
    }

    /** Gives the private pool back (its memory is freed once the tensors in it are). */
    void releasePool() {
        endPool();
        if (pool != null) {
            torch_cuda.getAllocator().releasePool(device, pool);
            pool = null;
        }
    }

    /** Waits for the side stream's work and makes the stream that was current before current again. */
    @Override
    public void close() {
        endPool();
        torch_cuda.device_synchronize();
        torch_cuda.setCurrentCUDAStream(original);
    }

    /** Accepts the allocations of work on one stream (the capture's). */
    private static final class SideStreamFilter extends StreamFilter {
        private final long stream;

        SideStreamFilter(long stream) {
            super();
            this.stream = stream;
        }

        @Override
        public boolean call(Pointer s) {
            return s != null && s.address() == stream;
        }
    }
}
