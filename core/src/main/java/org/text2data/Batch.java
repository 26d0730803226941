package org.text2data;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;

import org.bytedeco.pytorch.ByteVector;
import org.bytedeco.pytorch.GenericDict;
import org.bytedeco.pytorch.GenericDictEntryRef;
import org.bytedeco.pytorch.GenericDictIterator;
import org.bytedeco.pytorch.IValue;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.global.torch;

/**
 * A data set: {@code data}, {@code cond} and {@code label}, one row per example along the first
 * dimension; {@code cond} is null for unlabelled data (pretraining). {@link #load} reads a dict of these three tensors saved by Python's
 * {@code torch.save({"data": ..., "cond": ..., "label": ...}, path)}.
 *
 * @param data  the model inputs, one row per example; required
 * @param cond  the conditions, one row per example, or null for unlabelled data
 * @param label the targets the loss compares predictions with, one row per example; required
 */
public record Batch(Tensor data, Tensor cond, Tensor label) implements AutoCloseable {

    /** The keys {@link #load} expects in the saved dict, in the order data, cond, label. */
    public static final List<String> KEYS = List.of("data", "cond", "label");

    /**
     * Checks that the required tensors are given.
     *
     * @throws IllegalArgumentException if {@code data} or {@code label} is null
     */
    public Batch {
        if (data == null || label == null) {
            throw new IllegalArgumentException("data and label are required");
        }
    }

    /**
     * Data without conditions, for pretraining.
     *
     * @param data  the model inputs, one row per example
     * @param label the targets, one row per example
     * @return a batch whose {@code cond} is null
     * @throws IllegalArgumentException if {@code data} or {@code label} is null
     */
    public static Batch unlabelled(Tensor data, Tensor label) {
        return new Batch(data, null, label);
    }

    /**
     * Whether every row has a condition.
     *
     * @return true if {@code cond} is not null
     */
    public boolean labelled() {
        return cond != null;
    }

    /**
     * Number of rows.
     *
     * @return the size of {@code data}'s first dimension
     */
    public long size() {
        return data.size(0);
    }

    /**
     * Loads a {@code torch.save} dict with keys data, cond, label; problems name the file and key. The file is
     * read in chunks straight into native memory, so files of 2 GiB and more load (given the memory).
     *
     * @param file a file written by {@code torch.save} (zip format, PyTorch 1.6 or later)
     * @return the batch, owning its own tensor handles
     * @throws IllegalArgumentException if the file is missing or unreadable, is not a zip-format torch.save file,
     *                                  is truncated or corrupt (a tensor's record shorter than declared), does not fit
     *                                  in memory, does not hold a dict, lacks a key, holds a non-tensor or
     *                                  0-dim tensor under a key, or its tensors differ in number of rows
     */
    public static Batch load(Path file) {
        LibTorch.ensureLoaded();
        InputFile.checkReadable(file, "data file");
        ArchiveCheck.check(file, "data file");
        IValue root;
        try (ByteVector v = readZip(file)) {
            root = torch.pickle_load(v);
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("data file " + file + " cannot be loaded as a torch.save file: "
                    + ErrorMessages.of(e), e);
        }
        if (!root.isGenericDict()) {
            throw new IllegalArgumentException("data file " + file + " holds a " + root.tagKind().getString()
                    + ", expected a dict with keys " + KEYS);
        }
        GenericDict dict = root.toGenericDict();
        List<String> present = new ArrayList<>();
        Tensor[] found = new Tensor[3];
        GenericDictIterator end = dict.end();
        for (GenericDictIterator it = dict.begin(); it.notEquals(end); it.increment()) {
            GenericDictEntryRef e = it.access();
            IValue k = e.key();
            if (!k.isString()) {
                continue;
            }
            String key = k.toStringRef().getString();
            present.add(key);
            int i = KEYS.indexOf(key);
            if (i >= 0) {
                IValue val = e.value();
                if (!val.isTensor()) {
                    throw new IllegalArgumentException("data file " + file + ": key '" + key + "' holds a "
                            + val.tagKind().getString() + ", expected a tensor");
                }
                found[i] = new Tensor(val.toTensor()); // own handle: the dict may go before the batch
            }
        }
        for (int i = 0; i < 3; i++) {
            if (found[i] == null) {
                throw new IllegalArgumentException("data file " + file + " has no key '" + KEYS.get(i)
                        + "' (keys present: " + present + "; expected " + KEYS + ")");
            }
        }
        for (int i = 0; i < 3; i++) {
            if (found[i].dim() < 1) {
                throw new IllegalArgumentException("data file " + file + ": '" + KEYS.get(i) + "' is a 0-dim tensor "
                        + "(a single number); expected one row per example along the first dimension");
            }
        }
        for (int i = 0; i < 3; i++) {
            if (found[i].size(0) != found[0].size(0)) {
                throw new IllegalArgumentException("data file " + file + ": '" + KEYS.get(i) + "' has shape "
                        + java.util.Arrays.toString(found[i].shape()) + " but 'data' has "
                        + found[0].size(0) + " rows");
            }
        }
        return new Batch(found[0], found[1], found[2]);
    }

    /** Bytes read per call when loading (a test lowers it to exercise the chunking on small files). */
    static int readChunk = 64 << 20;

    private static final byte[] ZIP = {'P', 'K', 3, 4};
    /** The start of PyTorch's legacy (before 1.6) torch.save format: a pickled magic number. */
    private static final byte[] LEGACY = {(byte) 0x80, 2, (byte) 0x8a, 0x0a, 0x6c, (byte) 0xfc, (byte) 0x9c, 0x46,
            (byte) 0xf9, 0x20, 0x6a, (byte) 0xa8, 0x50, 0x19};

    /** The whole file in a native byte vector, after checking that it is a zip archive as torch.save writes. */
    private static ByteVector readZip(Path file) {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            ByteBuffer head = ByteBuffer.allocate(LEGACY.length);
            while (head.hasRemaining() && ch.read(head, head.position()) > 0) {
                // a short file gives a short head
            }
            byte[] h = java.util.Arrays.copyOf(head.array(), head.position());
            if (!startsWith(h, ZIP)) {
                if (startsWith(h, LEGACY)) {
                    throw new IllegalArgumentException("data file " + file + " is in PyTorch's legacy serialization "
                            + "format (torch.save before PyTorch 1.6, or _use_new_zipfile_serialization=False), which "
                            + "libtorch cannot read; load it in Python and save it again with torch.save(obj, path)");
                }
                throw new IllegalArgumentException("data file " + file + " is not a torch.save file: "
                        + (size == 0 ? "it is empty" : h.length > 0 && h[0] == (byte) 0x80
                        ? "it is a plain Python pickle, not the zip archive torch.save writes"
                        : "it does not start with the zip header torch.save writes"));
            }
            ByteVector v;
            try {
                v = new ByteVector(size);
            } catch (RuntimeException | OutOfMemoryError e) {
                throw new IllegalArgumentException("data file " + file + " (" + size + " bytes) does not fit in memory: "
                        + ErrorMessages.of(e), e);
            }
            try {
                fill(v, size, ch);
            } catch (IOException | RuntimeException e) {
                v.close();
                throw e;
            }
            return v;
        } catch (IOException e) {
            throw new IllegalArgumentException("data file " + file + " cannot be read: " + AtomicFile.reason(e), e);
        }
    }

    private static boolean startsWith(byte[] bytes, byte[] prefix) {
        return bytes.length >= prefix.length && java.util.Arrays.equals(bytes, 0, prefix.length, prefix, 0, prefix.length);
    }

    /** Reads {@code size} bytes of {@code ch} into {@code v}'s storage, chunk by chunk (no Java array of the whole). */
    private static void fill(ByteVector v, long size, FileChannel ch) throws IOException {
        MemorySegment dst = contents(v, size);
        for (long off = 0; off < size; ) {
            int n = (int) Math.min(readChunk, size - off);
            ByteBuffer buf = dst.asSlice(off, n).asByteBuffer();
            while (buf.hasRemaining()) {
                if (ch.read(buf, off + buf.position()) < 0) {
                    throw new IOException("the file got shorter while being read (" + (off + buf.position()) + " of "
                            + size + " bytes)");
                }
            }
            off += n;
        }
    }

    /**
     * The storage of a {@code std::vector<char>} of {@code size} bytes as a memory segment. bytedeco's ByteVector
     * has no {@code data()}; its {@code begin()} iterator is a heap copy of libstdc++'s {@code __normal_iterator},
     * whose one field is the element pointer. Checked on the first and last byte (flipped and
     * restored) before use.
     */
    static MemorySegment contents(ByteVector v, long size) {
        if (size == 0) {
            return MemorySegment.NULL;
        }
        long address;
        try (ByteVector.Iterator it = v.begin()) {
            address = MemorySegment.ofAddress(it.address()).reinterpret(Long.BYTES).get(ValueLayout.JAVA_LONG, 0);
        }
        MemorySegment seg = MemorySegment.ofAddress(address).reinterpret(size);
        byte first = v.get(0);
        byte last = v.get(size - 1);
        v.put(0, (byte) ~first);
        v.put(size - 1, (byte) ~last);
        boolean ok = seg.get(ValueLayout.JAVA_BYTE, 0) == (byte) ~first && seg.get(ValueLayout.JAVA_BYTE, size - 1) == (byte) ~last;
        v.put(0, first);
        v.put(size - 1, last);
        if (!ok) {
            throw new IllegalStateException("unexpected std::vector layout in bytedeco's ByteVector");
        }
        return seg;
    }

    /**
     * Rows {@code [from, to)}, sharing memory.
     *
     * @param from the first row, inclusive
     * @param to   the end row, exclusive
     * @return a batch of views into this batch's tensors
     */
    public Batch slice(long from, long to) {
        return new Batch(data.narrow(0, from, to - from), cond == null ? null : cond.narrow(0, from, to - from),
                label.narrow(0, from, to - from));
    }

    /**
     * Rows at {@code index} (a 1-D int64 tensor), copied.
     *
     * @param index the row numbers to take, in the order to take them
     * @return a new batch holding copies of those rows
     */
    public Batch select(Tensor index) {
        return new Batch(data.index_select(0, index), cond == null ? null : cond.index_select(0, index),
                label.index_select(0, index));
    }

    /**
     * This batch on another device.
     *
     * @param device a libtorch device string such as {@code "cpu"} or {@code "cuda:0"}
     * @return a batch with each tensor moved to {@code device}, keeping its dtype
     */
    public Batch to(String device) {
        try (org.bytedeco.pytorch.Device d = new org.bytedeco.pytorch.Device(device)) {
            return new Batch(data.to(d, data.scalar_type()), cond == null ? null : cond.to(d, cond.scalar_type()),
                    label.to(d, label.scalar_type()));
        }
    }

    /** Releases the native tensors of {@code data}, {@code cond} (if any) and {@code label}. */
    @Override
    public void close() {
        data.close();
        if (cond != null) {
            cond.close();
        }
        label.close();
    }
}
