package org.text2data;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ThreadLocalRandom;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Writes a file atomically: into a temporary file beside it, then a rename, so no reader sees half of it.
 * A temporary file still being written when the JVM shuts down (Ctrl-C, SIGTERM, {@code System.exit}) is
 * deleted by a shutdown hook, so an interrupted save leaves nothing behind. A process killed outright
 * ({@code kill -9}, a crash, power loss) cannot clean up: its temporary file's name carries its host and process
 * id ({@code .<name>.<host>-<pid>-<random>.tmp}), and the next write of the same target on the same host deletes
 * it once no process of that id is running. A file of a live process, of another host, or named otherwise is
 * never touched.
 */
public final class AtomicFile {
    private AtomicFile() {
    }

    /** Temporary files being written now; the shutdown hook deletes what is left of them. */
    private static final Set<Path> IN_FLIGHT = ConcurrentHashMap.newKeySet();
    private static boolean hookInstalled;

    /** What writes the content, to the path it is given. */
    @FunctionalInterface
    public interface Writer {
        /**
         * Writes the whole content to {@code tmp}.
         *
         * @param tmp the temporary file to write, already created and empty
         * @throws IOException if writing fails
         */
        void write(Path tmp) throws IOException;
    }

    /**
     * Runs {@code writer} on a temporary file in {@code target}'s folder, then renames it to {@code target}.
     * Failures name {@code target} and the reason (permission denied, read-only file system, disk full, ...).
     * The temporary file is deleted whether or not the write succeeds.
     *
     * @param target the file to create or replace
     * @param writer writes the content to the temporary file it is given
     * @throws IOException if {@code target} is null, a folder or a special file, its folder does not exist, or
     *                     creating, writing or renaming the temporary file fails
     */
    public static void write(Path target, Writer writer) throws IOException {
        write(target, writer, false);
    }

    /**
     * As {@link #write}, but the writer is given a file with {@code target}'s own name, in a temporary folder beside
     * it (for writers that record the file's name in what they write: libtorch names a saved module's top folder
     * after its file). The folder is named, cleaned up and left to a later write's clean-up like a temporary file.
     *
     * @param target the file to create or replace
     * @param writer writes the content to the file it is given (named as {@code target}, in a temporary folder)
     * @throws IOException as {@link #write}
     */
    public static void writeNamed(Path target, Writer writer) throws IOException {
        write(target, writer, true);
    }

    private static void write(Path target, Writer writer, boolean named) throws IOException {
        Path given = target;
        target = followLinks(target); // a link stays a link: the file it points to is replaced
        Path dir = checkTarget(target);
        installHook();
        deleteStale(dir, target.getFileName().toString());
        String random = Long.toUnsignedString(ThreadLocalRandom.current().nextLong(), 36);
        Path tmp = dir.resolve("." + target.getFileName() + "." + (HOST == null ? "" : HOST + "-" + PID + "-") + random
                + ".tmp");
        Path file = named ? tmp.resolve(target.getFileName()) : tmp;
        IN_FLIGHT.add(tmp); // before it exists: a shutdown from here on deletes it
        try {
            if (named) {
                Files.createDirectory(tmp);
            }
            Files.createFile(file);
            if (file.getFileSystem().supportedFileAttributeViews().contains("posix")) {
                Files.setPosixFilePermissions(file, PosixFilePermissions.fromString("rw-r--r--"));
            }
            writer.write(file);
            Files.move(file, target, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new IOException("could not write " + given + (given.equals(target) ? "" : " (a link to " + target
                    + ")") + ": " + reason(e), e);
        } finally {
            try {
                delete(tmp);
            } finally {
                IN_FLIGHT.remove(tmp);
            }
        }
    }

    /** Deletes a temporary file, or a temporary folder and the files in it; what is not there is fine. */
    private static void delete(Path tmp) throws IOException {
        if (Files.isDirectory(tmp, LinkOption.NOFOLLOW_LINKS)) {
            try (var files = Files.newDirectoryStream(tmp)) {
                for (Path f : files) {
                    Files.deleteIfExists(f);
                }
            }
        }
        Files.deleteIfExists(tmp);
    }

    /**
     * Checks, before any work, that {@link #write} could write {@code target}: it is not a folder or a special
     * file, its folder exists, and a file can be created (and is then deleted) in that folder. Nothing on disk
     * changes.
     *
     * @param target the file that is to be written
     * @return the folder it would be written in (its links followed)
     * @throws IOException saying why not, if {@code target} cannot be written
     */
    public static Path checkWritable(Path target) throws IOException {
        Path dir = checkTarget(followLinks(target));
        Path probe;
        try {
            probe = Files.createTempFile(dir, ".text2data-write-check", ".tmp");
        } catch (IOException e) {
            throw new IOException("cannot write " + target + ": cannot create a file in " + dir + ": " + reason(e), e);
        }
        Files.deleteIfExists(probe);
        return dir;
    }

    /**
     * The file a symbolic link points to, through every link in a chain (a dangling link: the path it names), or
     * {@code target} itself. Renaming onto a link would replace the link by a file and leave its target as it was.
     *
     * @param target a path, or null
     * @return the path at the end of its chain of links (null for null)
     * @throws IOException if the chain is longer than 40 links (a loop) or a link cannot be read
     */
    public static Path followLinks(Path target) throws IOException {
        if (target == null) {
            return null;
        }
        Path p = target;
        for (int hops = 0; Files.isSymbolicLink(p); hops++) {
            if (hops == 40) {
                throw new IOException("cannot write " + target + ": too many levels of symbolic links");
            }
            Path dir = p.toAbsolutePath().getParent();
            p = dir.resolve(Files.readSymbolicLink(p));
        }
        return p;
    }

    /** The target's folder, after checking that the target can be a file there. */
    private static Path checkTarget(Path target) throws IOException {
        if (target == null) {
            throw new IOException("no output file given");
        }
        if (Files.isDirectory(target)) {
            throw new IOException("cannot write " + target + ": it is a folder, not a file");
        }
        if (Files.exists(target) && !Files.isRegularFile(target)) {
            throw new IOException("cannot write " + target + ": it is not a regular file (a device, FIFO or socket)");
        }
        Path dir = target.toAbsolutePath().getParent();
        if (dir == null) {
            throw new IOException("cannot write " + target + ": it has no parent folder");
        }
        if (!Files.exists(dir)) {
            throw new IOException("cannot write " + target + ": folder does not exist: " + dir);
        }
        if (!Files.isDirectory(dir)) {
            throw new IOException("cannot write " + target + ": not a folder: " + dir);
        }
        return dir;
    }

    /**
     * Why an I/O operation failed, in words and without the paths the exception names (which may be a hidden
     * temporary file): "permission denied", "Read-only file system", "No space left on device", ...
     *
     * @param e the failure
     * @return a short description of the cause
     */
    public static String reason(IOException e) {
        if (e instanceof AccessDeniedException) {
            return "permission denied";
        }
        if (e instanceof NoSuchFileException) {
            return "no such file or folder";
        }
        if (e instanceof NotDirectoryException) {
            return "not a folder";
        }
        if (e instanceof FileAlreadyExistsException) {
            return "a file of that name already exists";
        }
        if (e instanceof DirectoryNotEmptyException) {
            return "it is a folder that is not empty";
        }
        if (e instanceof FileSystemException fse && fse.getReason() != null) {
            return fse.getReason();
        }
        return ErrorMessages.of(e);
    }

    /** This process's id, written into its temporary files' names. */
    private static final long PID = ProcessHandle.current().pid();
    /**
     * This host, as 12 hex digits of a hash of its name and its process-id namespace, written into temporary
     * files' names: a process id means something on its own host, in its own namespace only (a folder may be
     * shared over the network, or between containers). Null where the host name cannot
     * be read without a network lookup: then names carry no process id and nothing is ever deleted as stale.
     */
    private static final String HOST = computeHostId();
    /** What follows {@code .<name>.<host>-} in a temporary file's name: {@code <pid>-<random>.tmp}. */
    private static final Pattern STALE_REST =
            Pattern.compile("(\\d{1,19})-[0-9a-z]{1,13}\\.tmp");

    /**
     * This host and its process-id namespace, as 12 hex digits (what temporary files' names carry with the pid), or
     * null where the host name cannot be read: a process id read back is this host's only where this matches.
     *
     * @return the host's id, or null
     */
    public static String hostId() {
        return HOST;
    }

    private static String computeHostId() {
        try {
            String name = Files.readString(Path.of("/proc/sys/kernel/hostname")).trim();
            if (name.isEmpty()) {
                return null;
            }
            try { // containers may share a host name and a folder but not their process ids
                name += "\n" + Files.readSymbolicLink(Path.of("/proc/self/ns/pid"));
            } catch (IOException | UnsupportedOperationException | SecurityException noNamespace) {
                // the host name alone
            }
            byte[] hash = MessageDigest.getInstance("SHA-256")
                    .digest(name.getBytes(StandardCharsets.UTF_8));
            return HexFormat.of().formatHex(hash, 0, 6);
        } catch (IOException | NoSuchAlgorithmException | RuntimeException e) {
            return null;
        }
    }

    /**
     * Deletes the temporary files that writes of {@code name} in {@code dir} by processes of this host that are no
     * longer running left behind (killed with SIGKILL, crashed). Best effort: what cannot be listed or deleted is
     * left.
     */
    private static void deleteStale(Path dir, String name) {
        if (HOST == null) {
            return;
        }
        String prefix = "." + name + "." + HOST + "-";
        try (var files = Files.newDirectoryStream(dir, p -> {
            String f = p.getFileName().toString();
            return f.startsWith(prefix) && f.endsWith(".tmp");
        })) {
            for (Path p : files) {
                String rest = p.getFileName().toString().substring(prefix.length());
                Matcher m = STALE_REST.matcher(rest);
                if (!m.matches()) {
                    continue;
                }
                long pid;
                try {
                    pid = Long.parseLong(m.group(1));
                } catch (NumberFormatException e) {
                    continue;
                }
                if (pid == PID || ProcessHandle.of(pid).isPresent() || Files.isSymbolicLink(p)) {
                    continue; // a live writer's (or a reused id's: left, to be safe)
                }
                try {
                    delete(p); // a file, or a writeNamed folder
                } catch (IOException | RuntimeException ignored) {
                    // someone else's to clean, or gone already
                }
            }
        } catch (IOException | RuntimeException ignored) {
            // best effort: the write itself says what is wrong with the folder
        }
    }

    private static synchronized void installHook() {
        if (hookInstalled) {
            return;
        }
        try {
            Runtime.getRuntime().addShutdownHook(new Thread(AtomicFile::deleteInFlight, "text2data-atomic-file-cleanup"));
            hookInstalled = true;
        } catch (IllegalStateException shuttingDown) {
            // the JVM is already shutting down: nothing left to install the hook for
        }
    }

    private static void deleteInFlight() {
        for (Path p : IN_FLIGHT) {
            try {
                delete(p);
            } catch (IOException | RuntimeException ignored) {
                // best effort: the JVM is going away
            }
        }
    }
}
