package org.text2data;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/** Checks an input file before it is read, so that each problem gets its own message. */
public final class InputFile {
    private InputFile() {
    }

    /**
     * Checks that {@code file} is an existing, readable regular file; {@code what} names it in the message
     * ("data file", "model file").
     *
     * @param file the file to check
     * @param what what the file is, to start the message with
     * @throws IllegalArgumentException saying which of these it is not: given (null), found, a file rather than a
     *                                  folder, a regular file rather than a FIFO/device/socket, or readable (with the
     *                                  reason, e.g. permission denied)
     */
    public static void checkReadable(Path file, String what) {
        if (file == null) {
            throw new IllegalArgumentException(what + " is not given (null)");
        }
        if (!Files.exists(file)) {
            throw new IllegalArgumentException(what + " not found: " + file);
        }
        if (Files.isDirectory(file)) {
            throw new IllegalArgumentException(what + " " + file + " is a folder, not a file");
        }
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException(what + " " + file + " is not a regular file (it is a FIFO, device or "
                    + "socket); give the path of a saved file");
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            ch.size();
        } catch (IOException e) {
            throw new IllegalArgumentException(what + " " + file + " cannot be read: " + AtomicFile.reason(e), e);
        }
    }
}
