package org.text2data.cli;

import java.io.IOException;
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

    /** A path that does not exist, as its real folder and its name; null when its folder does not exist either. */
    private static Path realTarget(Path p) {
        Path abs = p.toAbsolutePath().normalize();
        Path dir = abs.getParent();
        Path name = abs.getFileName();
        if (dir == null || name == null) {
            return null;
        }
        if (Files.isSymbolicLink(abs)) { // a dangling link: where it points
            try {
                Path target = Files.readSymbolicLink(abs);
                return realTarget(dir.resolve(target));
            } catch (IOException | StackOverflowError e) {
                return null;
            }
        }
        try {
            return dir.toRealPath().resolve(name);
        } catch (IOException e) {
            return null;
        }
    }
}
