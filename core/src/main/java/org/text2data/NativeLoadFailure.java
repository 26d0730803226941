package org.text2data;

import java.io.File;
import java.io.IOException;
import java.util.LinkedHashSet;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.bytedeco.javacpp.Loader;

/**
 * Turns libtorch's failure to load, when a shared library it needs is missing, into a message that names
 * the library and says what to install (see {@link LibTorch#ensureLoaded()}). The typical case: the CUDA
 * build of libtorch ({@code -Pgpu}) on a machine without the CUDA 13 runtime libraries on the dynamic
 * linker's path, where the JVM would otherwise show an {@link UnsatisfiedLinkError} and a stack trace.
 */
final class NativeLoadFailure {

    /** The dynamic linker's words for a library it could not find: "libcudart.so.13: cannot open shared object file". */
    private static final Pattern MISSING = Pattern.compile("(lib[A-Za-z0-9_.+-]+?\\.so[0-9.]*): cannot open shared object file");
    /** The library whose dependency was missing, as the dynamic linker's message starts: "/path/libtorch_cuda.so: ". */
    private static final Pattern LOADING = Pattern.compile("(/\\S+?\\.so[0-9.]*): lib[A-Za-z0-9_.+-]+?\\.so[0-9.]*: cannot open");

    private NativeLoadFailure() {
    }

    /** The libraries named as missing anywhere in {@code t}'s messages and causes, in order of appearance. */
    static Set<String> missingLibraries(Throwable t) {
        Set<String> names = new LinkedHashSet<>();
        Set<Throwable> seen = new java.util.HashSet<>();
        for (Throwable c = t; c != null && seen.add(c); c = c.getCause()) {
            collect(c.getMessage(), names);
            for (Throwable s : c.getSuppressed()) {
                collect(s.getMessage(), names);
            }
        }
        return names;
    }

    private static void collect(String message, Set<String> into) {
        if (message == null) {
            return;
        }
        Matcher m = MISSING.matcher(message);
        while (m.find()) {
            into.add(m.group(1));
        }
    }

    /**
     * An {@link IllegalStateException} that names the missing libraries and what to install, with {@code e} as
     * its cause; {@code e} itself is thrown where its messages name no missing library.
     */
    static RuntimeException explain(LinkageError e) {
        Set<String> missing = missingLibraries(e);
        if (missing.isEmpty()) {
            throw e;
        }
        String message = "libtorch could not be loaded: " + message(missing) + lddHint(e);
        return new IllegalStateException(message, e);
    }

    /**
     * Why libtorch sees no CUDA: the CPU build; the CUDA build with libraries missing (JavaCPP loads
     * {@code libtorch_cuda.so} as an optional library and goes on without it, silently, when one of its
     * dependencies is missing, so this loads it once more to read the dynamic linker's message); or the CUDA
     * build loaded and no device or driver.
     */
    static String cudaUnavailableReason() {
        String dir = "/org/bytedeco/pytorch/" + Loader.getPlatform() + "-gpu/";
        java.net.URL url = org.bytedeco.pytorch.presets.torch.class.getResource(dir + "libtorch_cuda.so");
        if (url == null) {
            return "this libtorch is the CPU build; build with -Pgpu for the CUDA one (README, \"GPU\")";
        }
        try {
            File f;
            if ("file".equals(url.getProtocol())) { // unpacked on the class path (bench/gpu/java-bundle.sh)
                f = new File(url.toURI());
            } else { // in the jar: the folder SafeLoading extracted it to (no second copy)
                File[] dirs = Loader.cacheResources(org.bytedeco.pytorch.presets.torch.class, dir);
                f = dirs.length == 0 ? null : new File(dirs[0], "libtorch_cuda.so");
            }
            if (f != null && f.isFile()) {
                System.load(f.getAbsolutePath());
            }
        } catch (UnsatisfiedLinkError e) {
            Set<String> missing = missingLibraries(e);
            if (!missing.isEmpty()) {
                return message(missing) + lddHint(e);
            }
            return "the CUDA build of libtorch could not load libtorch_cuda.so: " + e.getMessage();
        } catch (IOException | java.net.URISyntaxException | RuntimeException e) {
            return "the CUDA build of libtorch could not be read from the JavaCPP cache: " + e;
        }
        return "the CUDA build of libtorch loaded, but sees no usable GPU (no device, or no NVIDIA driver: "
                + "see nvidia-smi)";
    }

    /** Where the dynamic linker stops at the first missing library, how to list them all. */
    private static String lddHint(Throwable t) {
        Set<Throwable> seen = new java.util.HashSet<>();
        for (Throwable c = t; c != null && seen.add(c); c = c.getCause()) {
            Matcher m = c.getMessage() == null ? null : LOADING.matcher(c.getMessage());
            if (m != null && m.find()) {
                return " The dynamic linker names the first missing library only; `ldd " + m.group(1)
                        + "` lists every one.";
            }
        }
        return "";
    }

    private static String message(Set<String> missing) {
        boolean cuda = missing.stream().anyMatch(NativeLoadFailure::isCudaLibrary);
        return String.join(", ", missing) + (missing.size() == 1 ? " was" : " were")
                + " not found on the dynamic linker's path (LD_LIBRARY_PATH, ldconfig)."
                + (cuda ? " This is the CUDA build of libtorch (mvn -Pgpu: bytedeco's linux-x86_64-gpu), which needs a "
                        + "CUDA 13 runtime with cuDNN 9, cuBLAS, cuFFT, cuSPARSE, cuSOLVER, cuRAND, NCCL, cuFile and "
                        + "CUPTI: install NVIDIA's packages (CUDA toolkit 13 and cuDNN 9), or the nvidia-* Python wheels "
                        + "and put every lib folder under site-packages/nvidia on LD_LIBRARY_PATH (README, \"GPU\"). "
                        + "On a machine without a GPU, build without -Pgpu."
                        : " Install the library, or put the folder that holds it on LD_LIBRARY_PATH.");
    }

    static boolean isCudaLibrary(String name) {
        return name.matches("lib(cuda|cudart|cublas|cublasLt|cudnn.*|cufft.*|cusparse.*|cusolver.*|curand|nccl|cufile.*"
                + "|cupti|nvrtc.*|nvJitLink|nvToolsExt|nvshmem.*|nvidia-ml)\\.so.*");
    }
}
