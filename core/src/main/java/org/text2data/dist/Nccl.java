package org.text2data.dist;

import java.time.Duration;

import org.bytedeco.javacpp.chrono.Milliseconds;
import org.bytedeco.pytorch.Backend;
import org.bytedeco.pytorch.Store;
import org.text2data.LibTorch;

/**
 * NCCL, for CUDA tensors: in its own class so that its native bindings load only when asked for. It needs
 * the GPU build of libtorch ({@code mvn -Pgpu}) and a CUDA device per rank. Unverified: no GPU machine has
 * run it yet.
 */
final class Nccl {
    private Nccl() {
    }

    static Backend create(Store store, int rank, int worldSize, Duration timeout) {
        if (!LibTorch.cudaAvailable()) {
            throw new IllegalStateException("NCCL needs CUDA, and no CUDA device is usable here (this build of "
                    + "libtorch is CPU-only, or no GPU/driver is present): use --device cpu (Gloo), or the GPU "
                    + "build (mvn -Pgpu) on a GPU machine");
        }
        try {
            org.bytedeco.pytorch.nccl.ProcessGroupNCCL.Options opts =
                    new org.bytedeco.pytorch.nccl.ProcessGroupNCCL.Options();
            opts.timeout(new Milliseconds(timeout.toMillis()));
            return new org.bytedeco.pytorch.nccl.ProcessGroupNCCL(store, rank, worldSize, opts);
        } catch (LinkageError e) {
            throw new IllegalStateException("NCCL is not in this build of libtorch (" + e + "): use the GPU build "
                    + "(mvn -Pgpu)", e);
        } catch (RuntimeException e) {
            throw new IllegalStateException("rank " + rank + ": NCCL could not start: "
                    + ProcessGroup.firstLine(e.getMessage()), e);
        }
    }
}
