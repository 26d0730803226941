package org.text2data;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.Enumeration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;

/**
 * Checks a zip archive written by {@code torch.save} or {@code torch.jit.save} before libtorch reads it, for what
 * libtorch does not check and what would crash the JVM:
 *
 * <ul>
 *   <li>each tensor storage's record holds at least the bytes its pickle declares. libtorch sizes a storage from the
 *       element count in the pickle and points it at the record's bytes, so a short record (a truncated or crafted
 *       file) is read out of bounds: garbage values, or a segmentation fault;</li>
 *   <li>TorchScript code nests brackets at most {@link #MAX_CODE_DEPTH} deep: libtorch's parser recurses once per
 *       level on the thread's stack, and a deep enough expression overflows it (the process dies).</li>
 * </ul>
 *
 * <p>The pickles are scanned, not run: a small stack machine over the opcodes libtorch's unpickler reads finds each
 * persistent id {@code ("storage", torch.<Type>Storage, key, location, numel)}. A pickle with an opcode it does not
 * know is left to libtorch (which refuses those too).
 */
final class ArchiveCheck {
    private ArchiveCheck() {
    }

    /** The deepest bracket nesting accepted in TorchScript code; generated code stays far below it. */
    static final int MAX_CODE_DEPTH = 200;

    /** The largest pickle or code file scanned (they hold the structure and the code, not the tensors' bytes). */
    private static final long MAX_PICKLE = 256L << 20;

    /**
     * Checks the archive; a file that is not a readable zip is left to libtorch's own message.
     *
     * @param file the archive
     * @param what what the file is, to start the message with ("data file", "model file")
     * @throws IllegalArgumentException naming the file and the record, if a storage record is shorter than its pickle
     *                                  declares or TorchScript code nests too deep
     */
    static void check(Path file, String what) {
        try (ZipFile zip = new ZipFile(file.toFile())) {
            Map<String, Long> sizes = new HashMap<>();
            for (Enumeration<? extends ZipEntry> en = zip.entries(); en.hasMoreElements(); ) {
                ZipEntry e = en.nextElement();
                sizes.put(e.getName(), e.getSize());
            }
            if (Checkpoint.isCheckpoint(zip)) {
                throw new IllegalArgumentException(what + " " + file + " is a text2data checkpoint (written by "
                        + "Constraint.saveCheckpoint or finetune --checkpoint), not a " + what + ": read it with "
                        + "Checkpoint.read");
            }
            check(sizes, name -> {
                try (InputStream in = zip.getInputStream(zip.getEntry(name))) {
                    return in.readNBytes((int) MAX_PICKLE); // bounded, whatever the entry inflates to
                }
            }, what + " " + file);
        } catch (IOException e) {
            // not a zip Java can read: libtorch reads it, or says what is wrong, itself
        }
    }

    /**
     * {@link #check(Path, String)} for an archive held in memory (a checkpoint's {@code model.pt}). The archive is read
     * through its central directory, as libtorch reads it: PyTorch's writer marks its stored entries as followed by
     * a data descriptor, which {@code ZipInputStream} refuses.
     *
     * @param zip the archive's bytes
     * @param what what the archive is, to start the message with
     * @return how many storage records were checked (0 where the bytes are not a zip archive read here)
     */
    static int check(byte[] zip, String what) {
        Map<String, long[]> index; // name -> {method, compressed size, size, data offset}
        try {
            index = centralDirectory(zip);
        } catch (RuntimeException | java.util.zip.DataFormatException e) {
            return 0; // not a zip read here: left to libtorch
        }
        Map<String, Long> sizes = new HashMap<>();
        index.forEach((name, e) -> sizes.put(name, e[2]));
        try {
            return check(sizes, name -> entry(zip, index.get(name)), what);
        } catch (IOException e) {
            return 0; // an entry that does not inflate: left to libtorch
        }
    }

    /** The entries of a zip archive in memory, from its central directory (zip64 included). */
    private static Map<String, long[]> centralDirectory(byte[] z) throws java.util.zip.DataFormatException {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(z).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        int eocd = -1;
        for (int p = z.length - 22; p >= Math.max(0, z.length - 22 - 65535); p--) {
            if (b.getInt(p) == 0x06054b50) {
                eocd = p;
                break;
            }
        }
        if (eocd < 0) {
            throw new java.util.zip.DataFormatException("no end of central directory");
        }
        long count = b.getShort(eocd + 10) & 0xffff;
        long offset = b.getInt(eocd + 16) & 0xffffffffL;
        if ((count == 0xffff || offset == 0xffffffffL) && eocd >= 20 && b.getInt(eocd - 20) == 0x07064b50) {
            int z64 = Math.toIntExact(b.getLong(eocd - 20 + 8));
            if (b.getInt(z64) != 0x06064b50) {
                throw new java.util.zip.DataFormatException("bad zip64 end of central directory");
            }
            count = b.getLong(z64 + 32);
            offset = b.getLong(z64 + 48);
        }
        Map<String, long[]> out = new HashMap<>();
        int p = Math.toIntExact(offset);
        for (long k = 0; k < count; k++) {
            if (b.getInt(p) != 0x02014b50) {
                throw new java.util.zip.DataFormatException("bad central directory entry");
            }
            long method = b.getShort(p + 10) & 0xffff;
            long csize = b.getInt(p + 20) & 0xffffffffL;
            long size = b.getInt(p + 24) & 0xffffffffL;
            int nameLen = b.getShort(p + 28) & 0xffff;
            int extraLen = b.getShort(p + 30) & 0xffff;
            int commentLen = b.getShort(p + 32) & 0xffff;
            long local = b.getInt(p + 42) & 0xffffffffL;
            String name = new String(z, p + 46, nameLen, StandardCharsets.UTF_8);
            for (int x = p + 46 + nameLen; x + 4 <= p + 46 + nameLen + extraLen; ) { // zip64 sizes and offset
                int id = b.getShort(x) & 0xffff;
                int len = b.getShort(x + 2) & 0xffff;
                if (id == 1) {
                    int f = x + 4;
                    if (size == 0xffffffffL) {
                        size = b.getLong(f);
                        f += 8;
                    }
                    if (csize == 0xffffffffL) {
                        csize = b.getLong(f);
                        f += 8;
                    }
                    if (local == 0xffffffffL) {
                        local = b.getLong(f);
                    }
                }
                x += 4 + len;
            }
            int l = Math.toIntExact(local);
            if (b.getInt(l) != 0x04034b50) {
                throw new java.util.zip.DataFormatException("bad local header");
            }
            long data = l + 30L + (b.getShort(l + 26) & 0xffff) + (b.getShort(l + 28) & 0xffff);
            if (data + csize > z.length) {
                throw new java.util.zip.DataFormatException("entry beyond the archive");
            }
            out.put(name, new long[] {method, csize, size, data});
            p += 46 + nameLen + extraLen + commentLen;
        }
        return out;
    }

    /** An entry's bytes (stored or deflated). */
    private static byte[] entry(byte[] z, long[] e) throws IOException {
        int from = Math.toIntExact(e[3]);
        int csize = Math.toIntExact(e[1]);
        if (e[0] == 0) {
            return java.util.Arrays.copyOfRange(z, from, from + csize);
        }
        if (e[0] != 8 || e[2] > MAX_PICKLE) {
            throw new IOException("entry not read here");
        }
        java.util.zip.Inflater inf = new java.util.zip.Inflater(true);
        try {
            inf.setInput(z, from, csize);
            byte[] out = new byte[Math.toIntExact(e[2])];
            int n = 0;
            while (n < out.length && !inf.finished()) {
                int got = inf.inflate(out, n, out.length - n);
                if (got == 0 && (inf.needsInput() || inf.needsDictionary())) {
                    break;
                }
                n += got;
            }
            return n == out.length ? out : java.util.Arrays.copyOf(out, n);
        } catch (java.util.zip.DataFormatException bad) {
            throw new IOException(bad);
        } finally {
            inf.end();
        }
    }

    /** Reads an entry of the archive being checked. */
    private interface Entries {
        byte[] read(String name) throws IOException;
    }

    private static int check(Map<String, Long> sizes, Entries entries, String what) throws IOException {
        int checked = 0;
        for (String name : sizes.keySet()) {
            long size = sizes.get(name);
            if (!name.endsWith(".pkl") || name.endsWith(".debug_pkl") || size < 0 || size > MAX_PICKLE) {
                continue;
            }
            String folder = name.substring(0, name.length() - ".pkl".length()) + "/";
            for (Storage s : storages(entries.read(name))) {
                Long have = sizes.get(folder + s.key);
                long need = s.elementSize < 0 ? -1 : Math.multiplyHigh(s.numel, s.elementSize) != 0 ? Long.MAX_VALUE
                        : s.numel * s.elementSize;
                if (have != null && have >= 0) {
                    checked++;
                }
                if (have != null && have >= 0 && need > have) {
                    throw new IllegalArgumentException(what + " is truncated or corrupt: its record '" + folder + s.key
                            + "' holds " + have + " bytes, but its pickle declares a " + s.type + " of " + s.numel
                            + " elements (" + (need == Long.MAX_VALUE ? "more than 2^63" : need) + " bytes)");
                }
            }
        }
        for (String name : sizes.keySet()) {
            long size = sizes.get(name);
            if (!name.contains("/code/") || !name.endsWith(".py") || size < 0 || size > MAX_PICKLE) {
                continue;
            }
            byte[] code = entries.read(name);
            int depth = 0;
            int line = 1;
            for (byte b : code) {
                if (b == '(' || b == '[' || b == '{') {
                    if (++depth > MAX_CODE_DEPTH) {
                        throw new IllegalArgumentException(what + ": its TorchScript code '" + name + "' nests brackets "
                                + "more than " + MAX_CODE_DEPTH + " deep (line " + line + "), which libtorch's parser "
                                + "cannot read without overflowing its stack");
                    }
                } else if (b == ')' || b == ']' || b == '}') {
                    depth = Math.max(0, depth - 1);
                } else if (b == '\n') {
                    line++;
                }
            }
        }
        return checked;
    }

    /** A storage a pickle refers to: its record key, type name, element size (-1: unknown) and element count. */
    record Storage(String key, String type, long elementSize, long numel) {
    }

    private static long elementSize(String type) {
        return switch (type) {
            case "DoubleStorage", "LongStorage", "ComplexFloatStorage" -> 8;
            case "FloatStorage", "IntStorage", "QInt32Storage" -> 4;
            case "HalfStorage", "BFloat16Storage", "ShortStorage" -> 2;
            case "ByteStorage", "CharStorage", "BoolStorage", "QInt8Storage", "QUInt8Storage", "UntypedStorage",
                 "Float8_e5m2Storage", "Float8_e4m3fnStorage" -> 1;
            case "ComplexDoubleStorage" -> 16;
            default -> -1;
        };
    }

    private static final Object MARK = new Object();
    private static final Object OTHER = new Object();

    private record Global(String module, String name) {
    }

    /**
     * The storages a pickle's persistent ids name, found by a stack machine over the opcodes of pickle protocols 0-5;
     * it stops at STOP, at an opcode it does not know, or at the end of the bytes (whatever it found so far).
     */
    static List<Storage> storages(byte[] b) {
        List<Storage> out = new ArrayList<>();
        Deque<Object> stack = new ArrayDeque<>();
        Map<Long, Object> memo = new HashMap<>();
        int[] pos = {0};
        try {
            while (pos[0] < b.length) {
                int op = b[pos[0]++] & 0xff;
                switch (op) {
                    case 0x28 -> stack.push(MARK);                                 // MARK
                    case 0x2e -> { return out; }                                   // STOP
                    case 0x30 -> stack.pop();                                      // POP
                    case 0x31 -> toMark(stack);                                    // POP_MARK
                    case 0x32 -> stack.push(stack.peek());                         // DUP
                    case 0x46, 0x49, 0x4c -> { line(b, pos); stack.push(OTHER); }  // FLOAT, INT, LONG
                    case 0x4a -> stack.push((long) le(b, pos, 4, true));           // BININT
                    case 0x4b -> stack.push(le(b, pos, 1, false));                 // BININT1
                    case 0x4d -> stack.push(le(b, pos, 2, false));                 // BININT2
                    case 0x8a -> stack.push(longN(b, pos, (int) le(b, pos, 1, false))); // LONG1
                    case 0x8b -> stack.push(longN(b, pos, (int) le(b, pos, 4, false))); // LONG4
                    case 0x4e, 0x88, 0x89 -> stack.push(OTHER);                    // NONE, NEWTRUE, NEWFALSE
                    case 0x47 -> { skip(b, pos, 8); stack.push(OTHER); }           // BINFLOAT
                    case 0x50 -> { line(b, pos); stack.push(OTHER); }              // PERSID
                    case 0x51 -> {                                                 // BINPERSID
                        Object pid = stack.pop();
                        Storage s = storage(pid);
                        if (s != null) {
                            out.add(s);
                        }
                        stack.push(OTHER);
                    }
                    case 0x52 -> { stack.pop(); stack.pop(); stack.push(OTHER); }  // REDUCE
                    case 0x81 -> { stack.pop(); stack.pop(); stack.push(OTHER); }  // NEWOBJ
                    case 0x92 -> { stack.pop(); stack.pop(); stack.pop(); stack.push(OTHER); } // NEWOBJ_EX
                    case 0x53, 0x56 -> stack.push(line(b, pos));                   // STRING, UNICODE
                    case 0x54 -> stack.push(text(b, pos, le(b, pos, 4, false), false)); // BINSTRING
                    case 0x55 -> stack.push(text(b, pos, le(b, pos, 1, false), false)); // SHORT_BINSTRING
                    case 0x58 -> stack.push(text(b, pos, le(b, pos, 4, false), true));  // BINUNICODE
                    case 0x8c -> stack.push(text(b, pos, le(b, pos, 1, false), true));  // SHORT_BINUNICODE
                    case 0x8d -> stack.push(text(b, pos, le(b, pos, 8, false), true));  // BINUNICODE8
                    case 0x42, 0x96 -> { skip(b, pos, op == 0x42 ? le(b, pos, 4, false) : le(b, pos, 8, false));
                        stack.push(OTHER); }                                       // BINBYTES, BYTEARRAY8
                    case 0x43 -> { skip(b, pos, le(b, pos, 1, false)); stack.push(OTHER); } // SHORT_BINBYTES
                    case 0x8e -> { skip(b, pos, le(b, pos, 8, false)); stack.push(OTHER); } // BINBYTES8
                    case 0x61 -> stack.pop();                                      // APPEND
                    case 0x65, 0x75, 0x90 -> toMark(stack);                        // APPENDS, SETITEMS, ADDITEMS
                    case 0x73 -> { stack.pop(); stack.pop(); }                     // SETITEM
                    case 0x62 -> stack.pop();                                      // BUILD
                    case 0x63 -> stack.push(new Global(line(b, pos), line(b, pos))); // GLOBAL
                    case 0x93 -> {                                                 // STACK_GLOBAL
                        Object name = stack.pop();
                        Object module = stack.pop();
                        stack.push(module instanceof String m && name instanceof String n ? new Global(m, n) : OTHER);
                    }
                    case 0x64, 0x6c, 0x91 -> { toMark(stack); stack.push(OTHER); } // DICT, LIST, FROZENSET
                    case 0x7d, 0x5d, 0x8f -> stack.push(OTHER);                    // EMPTY_DICT, EMPTY_LIST, EMPTY_SET
                    case 0x74 -> stack.push(toMark(stack).toArray());             // TUPLE
                    case 0x29 -> stack.push(new Object[0]);                        // EMPTY_TUPLE
                    case 0x85, 0x86, 0x87 -> {                                     // TUPLE1, TUPLE2, TUPLE3
                        Object[] t = new Object[op - 0x84];
                        for (int i = t.length - 1; i >= 0; i--) {
                            t[i] = stack.pop();
                        }
                        stack.push(t);
                    }
                    case 0x67 -> stack.push(memo.getOrDefault(Long.parseLong(line(b, pos).trim()), OTHER)); // GET
                    case 0x68 -> stack.push(memo.getOrDefault(le(b, pos, 1, false), OTHER)); // BINGET
                    case 0x6a -> stack.push(memo.getOrDefault(le(b, pos, 4, false), OTHER)); // LONG_BINGET
                    case 0x70 -> memo.put(Long.parseLong(line(b, pos).trim()), stack.peek()); // PUT
                    case 0x71 -> memo.put(le(b, pos, 1, false), stack.peek());     // BINPUT
                    case 0x72 -> memo.put(le(b, pos, 4, false), stack.peek());     // LONG_BINPUT
                    case 0x94 -> memo.put((long) memo.size(), stack.peek());       // MEMOIZE
                    case 0x80 -> skip(b, pos, 1);                                  // PROTO
                    case 0x95 -> skip(b, pos, 8);                                  // FRAME
                    default -> { return out; }                                     // not one libtorch reads either
                }
            }
        } catch (RuntimeException e) { // a malformed pickle: libtorch's unpickler gives its own message
            return out;
        }
        return out;
    }

    /** A persistent id ("storage", torch.XStorage, key, location, numel) as a Storage, or null if it is not one. */
    private static Storage storage(Object pid) {
        if (!(pid instanceof Object[] t) || t.length < 5 || !"storage".equals(t[0]) || !(t[2] instanceof String key)
                || !(t[4] instanceof Long numel)) {
            return null;
        }
        String type = t[1] instanceof Global g ? g.name() : String.valueOf(t[1]);
        return new Storage(key, type, elementSize(type), numel);
    }

    private static List<Object> toMark(Deque<Object> stack) {
        List<Object> items = new ArrayList<>();
        for (Object o = stack.pop(); o != MARK; o = stack.pop()) {
            items.add(0, o);
        }
        return items;
    }

    private static long le(byte[] b, int[] pos, int n, boolean signed) {
        if (pos[0] + n > b.length) {
            throw new IndexOutOfBoundsException("pickle ends early");
        }
        long v = 0;
        for (int i = n - 1; i >= 0; i--) {
            v = (v << 8) | (b[pos[0] + i] & 0xff);
        }
        pos[0] += n;
        if (signed && n < 8) {
            v = (v << (64 - 8 * n)) >> (64 - 8 * n);
        }
        return v;
    }

    /** A little-endian two's-complement integer of n bytes, or OTHER when it does not fit a long. */
    private static Object longN(byte[] b, int[] pos, int n) {
        if (n > 8) {
            skip(b, pos, n);
            return OTHER;
        }
        return n == 0 ? 0L : le(b, pos, n, true);
    }

    private static void skip(byte[] b, int[] pos, long n) {
        if (n < 0 || pos[0] + n > b.length) {
            throw new IndexOutOfBoundsException("pickle ends early");
        }
        pos[0] += (int) n;
    }

    private static String text(byte[] b, int[] pos, long n, boolean utf8) {
        int start = pos[0];
        skip(b, pos, n);
        return new String(b, start, (int) n, utf8 ? StandardCharsets.UTF_8 : StandardCharsets.ISO_8859_1);
    }

    private static String line(byte[] b, int[] pos) {
        int start = pos[0];
        while (pos[0] < b.length && b[pos[0]] != '\n') {
            pos[0]++;
        }
        String s = new String(b, start, pos[0] - start, StandardCharsets.ISO_8859_1);
        pos[0]++;
        return s;
    }
}
