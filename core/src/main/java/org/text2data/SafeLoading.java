package org.text2data;

import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;

import org.bytedeco.javacpp.Loader;

/**
 * Set-up that must happen before the first bytedeco class loads (see {@link LibTorch}).
 *
 * <p>bytedeco's pytorch preset loads {@code link = {"c10", "torch", "torch_cpu"}} in that order, extracting each
 * library into the JavaCPP cache just before loading it. {@code libtorch.so} has {@code NEEDED libtorch_cpu.so}
 * and {@code RUNPATH $ORIGIN}; on an empty cache {@code libtorch_cpu.so} is not yet beside it, so the dynamic linker
 * takes the system's one (Debian's libtorch-dev: {@code /usr/lib/x86_64-linux-gnu/libtorch_cpu.so}, 1.13), which
 * pulls in {@code libc10.so.1.13}, and the JVM dies in {@code pthread_mutex_lock} when bytedeco's
 * {@code libtorch_cpu.so} initialises next to it. {@code LD_LIBRARY_PATH} is searched before {@code $ORIGIN}, so a
 * libtorch named there does the same even with a warm cache.
 *
 * <p>So: extract bytedeco's whole native directory first, then load its own gomp, c10 and torch_cpu by absolute
 * path, after OpenBLAS. Every later {@code NEEDED} entry then resolves, by soname, to what is already loaded.
 */
final class SafeLoading {
    private SafeLoading() {
    }

    static void apply() {
        // JavaCPP checks the process's resident size on every native allocation it tracks while
        // maxPhysicalBytes > 0 (a guard for code that leaves freeing to the GC); that check costs
        // microseconds per tensor a libtorch call returns. This library frees deterministically, so the
        // guard is off unless the user set it. Takes effect only if no JavaCPP Pointer was used before.
        if (System.getProperty("org.bytedeco.javacpp.maxPhysicalBytes") == null
                && System.getProperty("org.bytedeco.javacpp.maxphysicalbytes") == null) {
            System.setProperty("org.bytedeco.javacpp.maxPhysicalBytes", "0");
        }
        if (!Loader.isLoadLibraries()) {
            return;
        }
        String platform = Loader.getPlatform();
        File dir = null;
        try {
            for (String d : new String[] {platform + "-gpu", platform}) {
                File[] extracted = Loader.cacheResources(org.bytedeco.pytorch.presets.torch.class,
                        "/org/bytedeco/pytorch/" + d + "/");
                if (dir == null && extracted.length > 0) {
                    dir = extracted[0];
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("could not extract libtorch into the JavaCPP cache "
                    + "(set -Dorg.bytedeco.javacpp.cachedir to a writable directory)", e);
        }
        if (dir == null) {
            return; // no bundled libtorch for this platform: leave it all to Loader
        }
        Loader.load(org.bytedeco.openblas.global.openblas.class); // libtorch_cpu.so needs libopenblas.so.0
        for (String lib : new String[] {"libgomp.so.1", "libc10.so", "libtorch_cpu.so"}) {
            File f = new File(dir, lib);
            if (f.isFile()) {
                System.load(f.getAbsolutePath());
            }
        }
    }
}
