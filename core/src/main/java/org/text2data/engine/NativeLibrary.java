package org.text2data.engine;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Locale;

/**
 * Loads {@code libtext2data.so} (the fused kernels) once per class loader.
 *
 * <p>The library is a jar resource, {@code org/text2data/native/<platform>/libtext2data.so}. It is
 * extracted to a per-user cache directory keyed by its SHA-256 ({@code ~/.cache/text2data/<sha>/},
 * or {@code $XDG_CACHE_HOME/text2data/<sha>/}, or the directory named by the system property
 * {@code text2data.cache.dir}), written atomically, then loaded with {@link System#load}; the
 * generated bindings in {@code org.text2data.ffi} find its symbols through
 * {@link java.lang.foreign.SymbolLookup#loaderLookup()}. The system property
 * {@code text2data.native.library} names a file to load instead (for development builds).
 *
 * <p>Loading never throws from class initialisation: a failure is kept and reported by
 * {@link #isAvailable()} and {@link #unavailableReason()}.
 */
public final class NativeLibrary {

    /** System property naming a library file to load instead of the jar resource. */
    public static final String LIBRARY_PROPERTY = "text2data.native.library";
    /** System property naming the extraction cache directory. */
    public static final String CACHE_PROPERTY = "text2data.cache.dir";

    private static final String LIBRARY_NAME = "libtext2data.so";
    private static final Path LOADED;
    private static final String REASON;

    static {
        Path loaded = null;
        String reason;
        try {
            loaded = load();
            reason = null;
        } catch (Throwable t) {
            reason = t.getClass().getSimpleName() + ": " + t.getMessage();
        }
        LOADED = loaded;
        REASON = reason;
    }

    private NativeLibrary() {}

    /**
     * Whether libtext2data is loaded and its symbols can be called.
     *
     * @return true when the library loaded
     */
    public static boolean isAvailable() {
        return LOADED != null;
    }

    /**
     * Why the library could not be loaded, or {@code null} when it is available.
     *
     * @return the load failure's exception type and message, or {@code null}
     */
    public static String unavailableReason() {
        return REASON;
    }

    /**
     * The file the library was loaded from, or {@code null} when it is not available.
     *
     * @return the absolute path of the loaded library file, or {@code null}
     */
    public static Path loadedFrom() {
        return LOADED;
    }

    /**
     * Throws {@link IllegalStateException} with the reason when the library is not available.
     *
     * @throws IllegalStateException if the library could not be loaded
     */
    public static void require() {
        if (LOADED == null) {
            throw new IllegalStateException("libtext2data is not available: " + REASON);
        }
    }

    /**
     * The resource path of the library for this platform, e.g.
     * {@code org/text2data/native/linux-x86_64/libtext2data.so}.
     *
     * @return the class-path resource name, whether or not the jar holds it
     */
    public static String resourcePath() {
        return "org/text2data/native/" + platform() + "/" + LIBRARY_NAME;
    }

    static String platform() {
        String os = System.getProperty("os.name", "").toLowerCase(Locale.ROOT);
        String arch = System.getProperty("os.arch", "").toLowerCase(Locale.ROOT);
        String o = os.startsWith("linux") ? "linux" : os.replace(' ', '_');
        String a = switch (arch) {
            case "amd64", "x86_64" -> "x86_64";
            case "aarch64", "arm64" -> "arm64";
            default -> arch;
        };
        return o + "-" + a;
    }

    private static Path load() throws IOException {
        String explicit = System.getProperty(LIBRARY_PROPERTY);
        if (explicit != null && !explicit.isBlank()) {
            Path p = Path.of(explicit).toAbsolutePath();
            System.load(p.toString());
            return p;
        }
        String resource = resourcePath();
        byte[] bytes;
        try (InputStream in = NativeLibrary.class.getClassLoader().getResourceAsStream(resource)) {
            if (in == null) {
                throw new IOException("no native library for platform " + platform() + " (resource " + resource
                        + " is missing; was the native build skipped?)");
            }
            bytes = in.readAllBytes();
        }
        String sha = sha256(bytes);
        IOException firstFailure = null;
        for (Path root : cacheRoots()) {
            try {
                Path file = extract(root.resolve(sha), bytes, sha);
                System.load(file.toString());
                return file;
            } catch (IOException e) {
                if (firstFailure == null) {
                    firstFailure = e;
                } else {
                    firstFailure.addSuppressed(e);
                }
            }
        }
        throw firstFailure != null ? firstFailure : new IOException("no cache directory to extract the library to");
    }

    private static Path[] cacheRoots() {
        String property = System.getProperty(CACHE_PROPERTY);
        if (property != null && !property.isBlank()) {
            return new Path[] {Path.of(property)};
        }
        String xdg = System.getenv("XDG_CACHE_HOME");
        Path home = Path.of(System.getProperty("user.home", "."));
        Path primary = xdg != null && !xdg.isBlank() ? Path.of(xdg, "text2data") : home.resolve(".cache").resolve("text2data");
        Path fallback = Path.of(System.getProperty("java.io.tmpdir"), "text2data-" + System.getProperty("user.name", "user"));
        return new Path[] {primary, fallback};
    }

    private static Path extract(Path dir, byte[] bytes, String sha) throws IOException {
        Path target = dir.resolve(LIBRARY_NAME);
        if (Files.isRegularFile(target) && Files.size(target) == bytes.length && sha.equals(sha256(Files.readAllBytes(target)))) {
            return target;
        }
        Files.createDirectories(dir);
        Path tmp = Files.createTempFile(dir, LIBRARY_NAME, ".tmp");
        try {
            Files.write(tmp, bytes);
            try {
                Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, target, StandardCopyOption.REPLACE_EXISTING);
            }
        } finally {
            Files.deleteIfExists(tmp);
        }
        return target;
    }

    private static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
