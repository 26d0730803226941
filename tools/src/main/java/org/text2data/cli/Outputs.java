package org.text2data.cli;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.StandardOpenOption;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

import org.text2data.AtomicFile;

/** Checks made on an output path before any work, so that a run never ends in a write that cannot happen. */
final class Outputs {
    private Outputs() {
    }

    /**
     * Refuses {@code out} (given as {@code flag}) when it is the same file as one of {@code inputs} (flag to
     * path; symbolic links, hard links and relative paths resolved), or cannot be written: a folder, a special
     * file, a missing or read-only folder. Nothing on disk changes.
     */
    static void check(String flag, Path out, Map<String, Path> inputs) throws IOException {
        if (out == null || out.toString().isEmpty()) {
            throw new IllegalArgumentException(flag + ": the path is empty; give the file to write");
        }
        for (Map.Entry<String, Path> in : inputs.entrySet()) {
            if (sameFile(out, in.getValue())) {
                throw new IllegalArgumentException(flag + " " + out + " is the same file as " + in.getKey() + " "
                        + in.getValue() + ": writing it would destroy the input; choose another output file");
            }
        }
        try {
            AtomicFile.checkWritable(out);
        } catch (IOException e) {
            throw new IOException(flag + ": " + e.getMessage(), e);
        }
    }

    /** A lock on an output for the length of a run; see {@link #lock}. */
    static final class Lock implements AutoCloseable {
        private static final java.util.Set<Lock> HELD = java.util.concurrent.ConcurrentHashMap.newKeySet();
        private static boolean hookInstalled;
        private final Path file;
        private final FileChannel channel;
        private final FileLock lock;

        private Lock(Path file, FileChannel channel, FileLock lock) {
            this.file = file;
            this.channel = channel;
            this.lock = lock;
        }

        private static synchronized void installHook() {
            if (!hookInstalled) {
                hookInstalled = true;
                Runtime.getRuntime().addShutdownHook(new Thread(() -> HELD.forEach(Lock::close),
                        "text2data-output-locks"));
            }
        }

        /** Removes the lock file (while still holding it, so no other run can have it) and releases the lock. */
        @Override
        public void close() {
            if (!HELD.remove(this)) {
                return;
            }
            try {
                Files.deleteIfExists(file); // while held: no other run can hold it (a run that opened it retries)
            } catch (IOException e) {
                // left behind: harmless, the next run takes it over
            }
            try {
                lock.release();
                channel.close();
            } catch (IOException e) {
                // closing releases it in any case
            }
        }
    }

    /**
     * Takes an exclusive lock on {@code out} (given as {@code flag}) for the length of this run: a lock on the file
     * {@code .NAME.lock} beside it (which holds this process's id, and is removed at the end), released by the
     * system if the process dies. Refuses when another run holds it, naming that run's process. (This process never
     * opens the lock file a second time while it holds it: closing any descriptor of a file releases the process's
     * POSIX locks on it.)
     */
    static Lock lock(String flag, Path out) throws IOException {
        Path abs = out.toAbsolutePath().normalize();
        Path real = Files.exists(abs) ? abs.toRealPath() : realTarget(abs);
        if (real == null) {
            real = abs;
        }
        Path file = real.resolveSibling("." + real.getFileName() + ".lock");
        long pid = ProcessHandle.current().pid();
        for (Lock held : Lock.HELD) {
            if (held.file.equals(file)) { // another run in this JVM
                throw busy(flag, out, Long.toString(pid));
            }
        }
        String token = pid + " \n";
        Lock.installHook();
        for (int attempt = 0; attempt < 100; attempt++) {
            Object before = fileKey(file);
            if (before == null && !Files.exists(file, java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
                try (FileChannel created = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
                    created.size();
                } catch (IOException e) {
                    throw new IOException(flag + " " + out + ": cannot create its lock file " + file + ": "
                            + AtomicFile.reason(e), e);
                }
                continue;
            }
            FileChannel ch;
            try {
                ch = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE);
            } catch (java.nio.file.NoSuchFileException e) {
                continue; // removed by the run that held it: again
            } catch (IOException e) {
                throw new IOException(flag + " " + out + ": cannot open its lock file " + file + ": "
                        + AtomicFile.reason(e), e);
            }
            FileLock l;
            try {
                l = ch.tryLock();
            } catch (java.nio.channels.OverlappingFileLockException e) {
                l = null;
            }
            if (l == null) {
                String holder = "unknown";
                java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocate(64);
                if (ch.read(buf, 0) > 0) {
                    String[] words = new String(buf.array(), 0, buf.position(), StandardCharsets.UTF_8).split(" ");
                    holder = words[0].isBlank() ? holder : words[0].trim();
                }
                ch.close();
                throw busy(flag, out, holder);
            }
            Object after = fileKey(file);
            if (before == null || before.equals(after)) { // the path still names the file locked
                ch.truncate(0);
                ch.write(java.nio.ByteBuffer.wrap(token.getBytes(StandardCharsets.UTF_8)), 0);
                ch.force(false);
                Lock lock = new Lock(file, ch, l);
                Lock.HELD.add(lock);
                return lock;
            }
            l.release();
            ch.close();
        }
        throw new IOException(flag + " " + out + ": could not lock " + file + " (it keeps changing)");
    }

    private static IllegalStateException busy(String flag, Path out, String pid) {
        return new IllegalStateException(flag + " " + out + " is being written by another run (pid " + pid
                + "); wait for it to end or choose another file; nothing was written");
    }

    /** The file's identity (device and inode), read without opening it; null when it is missing or has none. */
    private static Object fileKey(Path file) {
        try {
            return Files.readAttributes(file, java.nio.file.attribute.BasicFileAttributes.class,
                    java.nio.file.LinkOption.NOFOLLOW_LINKS).fileKey();
        } catch (IOException e) {
            return null;
        }
    }

    /**
     * Checks, before any work, that files can be written in folder {@code dir} (given as {@code flag}): it is a
     * folder, or does not exist yet and its nearest existing ancestor is a folder in which a file can be created
     * (a probe file is created and deleted; nothing else changes).
     */
    static void checkFolder(String flag, Path dir) throws IOException {
        Path abs = dir.toAbsolutePath();
        if (Files.exists(abs) && !Files.isDirectory(abs)) {
            throw new IOException(flag + " " + dir + " is a file, not a folder");
        }
        Path existing = abs;
        while (existing != null && !Files.exists(existing)) {
            existing = existing.getParent();
        }
        if (existing == null) {
            throw new IOException(flag + " " + dir + ": no part of the path exists");
        }
        if (!Files.isDirectory(existing)) {
            throw new IOException(flag + " " + dir + ": cannot create it, " + existing + " is a file, not a folder");
        }
        Path probe;
        try {
            probe = Files.createTempFile(existing, ".text2data-write-check", ".tmp");
        } catch (IOException e) {
            throw new IOException(flag + " " + dir + ": cannot write in " + existing + ": " + AtomicFile.reason(e), e);
        }
        Files.deleteIfExists(probe);
    }

    /**
     * Whether two paths name the same file: the same existing file (symbolic links, hard links and relative paths
     * resolved), or, where one does not exist yet, the same name in the same real folder (so that two outputs that
     * are still to be written are found to be one).
     */
    static boolean sameFile(Path a, Path b) throws IOException {
        if (a == null || b == null || a.toString().isEmpty() || b.toString().isEmpty()) {
            return false;
        }
        if (Files.exists(a) && Files.exists(b)) {
            return Files.isSameFile(a, b);
        }
        if (Files.exists(a) || Files.exists(b)) {
            return false; // one exists, the other does not: different files
        }
        Path ra = realTarget(a);
        Path rb = realTarget(b);
        return ra != null && ra.equals(rb);
    }

    /**
     * A path that does not exist (a dangling link: where it points), as its real folder and its name; null when its
     * folder does not exist either, or its links loop.
     */
    private static Path realTarget(Path p) {
        try {
            Path abs = AtomicFile.followLinks(p.toAbsolutePath().normalize()).toAbsolutePath().normalize();
            Path dir = abs.getParent();
            Path name = abs.getFileName();
            return dir == null || name == null ? null : dir.toRealPath().resolve(name);
        } catch (IOException e) {
            return null;
        }
    }
}
