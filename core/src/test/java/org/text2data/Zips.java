package org.text2data;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Enumeration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import java.util.zip.ZipOutputStream;

/** Reading and rewriting zip archives (checkpoints, torch.save files) in tests that damage or edit them. */
final class Zips {
    private Zips() {
    }

    /** The entries of a zip archive, by name, in their order. */
    static Map<String, byte[]> read(Path zip) throws IOException {
        Map<String, byte[]> out = new LinkedHashMap<>();
        try (ZipFile z = new ZipFile(zip.toFile())) {
            for (Enumeration<? extends ZipEntry> en = z.entries(); en.hasMoreElements(); ) {
                ZipEntry e = en.nextElement();
                out.put(e.getName(), z.getInputStream(e).readAllBytes());
            }
        }
        return out;
    }

    /**
     * Writes {@code entries} to {@code file} as a zip archive: stored (uncompressed, as torch.save writes its
     * records) or deflated.
     */
    static Path write(Path file, Map<String, byte[]> entries, boolean stored) throws IOException {
        try (OutputStream os = Files.newOutputStream(file); ZipOutputStream zip = new ZipOutputStream(os)) {
            for (Map.Entry<String, byte[]> e : entries.entrySet()) {
                ZipEntry z = new ZipEntry(e.getKey());
                if (stored) {
                    z.setMethod(ZipEntry.STORED);
                    z.setSize(e.getValue().length);
                    CRC32 crc = new CRC32();
                    crc.update(e.getValue());
                    z.setCrc(crc.getValue());
                }
                zip.putNextEntry(z);
                zip.write(e.getValue());
                zip.closeEntry();
            }
        }
        return file;
    }

    /**
     * Writes {@code entries} deflated, except that the entry named {@code zerosName} holds {@code mib} MiB of zeros
     * instead (appended, deflated fast, where {@code entries} has no such entry): an archive that inflates far beyond
     * its size on disk.
     */
    static Path writeWithZeros(Path file, Map<String, byte[]> entries, String zerosName, int mib) throws IOException {
        Map<String, byte[]> all = new LinkedHashMap<>(entries);
        all.putIfAbsent(zerosName, null);
        byte[] zeros = new byte[1 << 20];
        try (OutputStream os = Files.newOutputStream(file); ZipOutputStream zip = new ZipOutputStream(os)) {
            for (Map.Entry<String, byte[]> e : all.entrySet()) {
                if (e.getKey().equals(zerosName)) {
                    zip.setLevel(java.util.zip.Deflater.BEST_SPEED);
                    zip.putNextEntry(new ZipEntry(zerosName));
                    for (int i = 0; i < mib; i++) {
                        zip.write(zeros);
                    }
                    zip.setLevel(java.util.zip.Deflater.DEFAULT_COMPRESSION);
                } else {
                    zip.putNextEntry(new ZipEntry(e.getKey()));
                    zip.write(e.getValue());
                }
                zip.closeEntry();
            }
        }
        return file;
    }
}
