package org.text2data;

import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TreeMap;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipException;
import java.util.zip.ZipFile;
import java.util.zip.ZipOutputStream;

import com.google.gson.Gson;
import com.google.gson.GsonBuilder;
import com.google.gson.JsonArray;
import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.gson.JsonPrimitive;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerScope;
import org.bytedeco.pytorch.ArchiveWriter;
import org.bytedeco.pytorch.ByteVector;
import org.bytedeco.pytorch.CompilationUnit;
import org.bytedeco.pytorch.Function;
import org.bytedeco.pytorch.GenericDict;
import org.bytedeco.pytorch.GenericDictEntryRef;
import org.bytedeco.pytorch.GenericDictIterator;
import org.bytedeco.pytorch.IValue;
import org.bytedeco.pytorch.IValueVector;
import org.bytedeco.pytorch.InputArchive;
import org.bytedeco.pytorch.NoGradGuard;
import org.bytedeco.pytorch.Optimizer;
import org.bytedeco.pytorch.OutputArchive;
import org.bytedeco.pytorch.QualifiedName;
import org.bytedeco.pytorch.Scalar;
import org.bytedeco.pytorch.StringVector;
import org.bytedeco.pytorch.Tensor;
import org.bytedeco.pytorch.TensorOptions;
import org.bytedeco.pytorch.TensorVector;
import org.bytedeco.pytorch.global.torch;

/**
 * A checkpoint of a {@link Constraint}: the parameters, the base optimizer's state (Adam's moments, step counts,
 * momentum buffers, ...) and options, the learning rate of every param group, the constraint's {@code alpha},
 * {@code beta} and finiteness-check flag, and optionally where a training loop stands ({@link #loopState()}), in
 * one file written atomically.
 *
 * <p>The file is a zip archive with uncompressed entries:
 * <ul>
 *   <li>{@code header.json}: {@code "format": "text2data-checkpoint"}, {@code "version": 1}, the parameters'
 *       names, shapes and dtypes, the optimizer's kind, options and param groups, the constraint's settings, which
 *       parameters have optimizer state (and its integer fields, such as {@code step}), and the size and SHA-256
 *       of every other entry;</li>
 *   <li>{@code model.pt}: the parameters, a {@code Dict[str, Tensor]} saved in {@code torch.save}'s format: a
 *       state dict Python reads with {@code torch.load(io.BytesIO(zipfile.ZipFile(path).read("model.pt")))};</li>
 *   <li>{@code optimizer.pt}: the optimizer's state tensors, a {@code Dict[str, Tensor]} keyed
 *       {@code "<parameter name>/<field>"} ({@code exp_avg}, {@code exp_avg_sq}, {@code momentum_buffer},
 *       {@code square_avg}, {@code sum}, ...), in the same format;</li>
 *   <li>{@code loop.json} (when a training loop wrote the checkpoint): the loop's position.</li>
 * </ul>
 *
 * {@link #read} checks every header field (presence, type and range: a header has no checksum and may be edited
 * by hand), reads only the entries the header lists and no more bytes than it says they hold, and checks every
 * entry's CRC and checksum before anything is parsed, so a truncated, damaged or edited file is refused with a
 * message naming the file and what is wrong; {@link #restore} checks that the checkpoint fits the constraint (parameter
 * names, shapes and dtypes, optimizer kind and options other than the learning rate) and applies it all or not at
 * all. The projection engines hold no state between steps (the kept gradients live from {@code firstStep} to
 * {@code secondStep}), so there is nothing of theirs to save. Tensors are saved on the CPU and restored onto the
 * parameters' device.
 */
public final class Checkpoint implements AutoCloseable {

    /** The value of {@code "format"} in the header. */
    public static final String FORMAT = "text2data-checkpoint";
    /** The format version this library writes and reads. */
    public static final int VERSION = 1;

    static final String HEADER = "header.json";
    static final String MODEL = "model.pt";
    static final String OPTIMIZER = "optimizer.pt";
    static final String LOOP = "loop.json";

    private static final Gson GSON = new GsonBuilder().serializeSpecialFloatingPointValues().disableHtmlEscaping()
            .create();
    private static CompilationUnit dictUnit;
    private static Function[] dictFunctions;

    private final Path source;
    private final JsonObject header;
    private final Map<String, Tensor> params;
    private final List<ParamState> optimizerState;
    private final String loopState;
    private boolean closed;

    private Checkpoint(Path source, JsonObject header, Map<String, Tensor> params, List<ParamState> optimizerState,
                       String loopState) {
        this.source = source;
        this.header = header;
        this.params = params;
        this.optimizerState = optimizerState;
        this.loopState = loopState;
    }

    /** The base optimizer's state for one parameter: integer fields (such as {@code step}) and tensors. */
    record ParamState(Map<String, Long> ints, Map<String, Tensor> tensors) {
    }

    /** One param group of the base optimizer: its learning rate, size and other options. */
    record Group(double lr, long size, JsonObject options) {
    }

    /** The base optimizer's state and groups, read from libtorch. */
    record OptimizerState(List<ParamState> perParam, List<Group> groups) implements AutoCloseable {
        @Override
        public void close() {
            for (ParamState s : perParam) {
                if (s != null) {
                    s.tensors().values().forEach(Tensor::close);
                }
            }
        }
    }

    // ---------------------------------------------------------------- writing

    /**
     * Writes {@code opt}'s parameters and state to {@code file}, atomically (see the class comment).
     *
     * @param file the checkpoint file to write or replace
     * @param opt the constraint to save
     * @throws IOException if the file cannot be written
     * @throws IllegalArgumentException if {@code file} or {@code opt} is null
     * @throws IllegalStateException if {@code opt} is closed
     */
    public static void save(Path file, Constraint opt) throws IOException {
        save(file, opt, null);
    }

    /**
     * Writes {@code opt}'s parameters and state, with a training loop's position ({@code loopState}, JSON text, or
     * null), to {@code file}, atomically: a reader, or a run killed while writing, sees the old file or the new one,
     * never a mix.
     *
     * @param file the checkpoint file to write or replace
     * @param opt the constraint to save
     * @param loopState the training loop's position as JSON text, stored as {@code loop.json}; or null for none
     * @throws IOException if the file cannot be written
     * @throws IllegalArgumentException if {@code file} or {@code opt} is null
     * @throws IllegalStateException if {@code opt} is closed
     */
    public static void save(Path file, Constraint opt, String loopState) throws IOException {
        if (file == null || opt == null) {
            throw new IllegalArgumentException(file == null ? "checkpoint file is null" : "constraint is null");
        }
        opt.checkOpen();
        LibTorch.ensureLoaded();
        opt.checkSkippedSteps(); // fused optimizer on a GPU: a skipped step is reported before its state is saved
        List<String> names = opt.parameterNames();
        List<Tensor> live = opt.parameters();
        Map<String, byte[]> entries = new LinkedHashMap<>();
        JsonObject h = new JsonObject();
        h.addProperty("format", FORMAT);
        h.addProperty("version", VERSION);
        h.addProperty("library", "text2data-jvm");
        try (PointerScope scope = new PointerScope();
             OptimizerState state = opt.optimizerState()) {
            JsonArray ps = new JsonArray();
            List<String> keys = new ArrayList<>();
            List<Tensor> values = new ArrayList<>();
            for (int i = 0; i < live.size(); i++) {
                Tensor p = live.get(i);
                JsonObject o = new JsonObject();
                o.addProperty("name", names.get(i));
                o.add("shape", shape(p));
                o.addProperty("dtype", Tensors.dtype(p));
                o.addProperty("grad", p.grad().defined());
                ps.add(o);
                keys.add(names.get(i));
                values.add(p.detach().cpu());
            }
            h.add("parameters", ps);
            entries.put(MODEL, pickleDict(keys, values));

            JsonObject o = new JsonObject();
            o.addProperty("kind", opt.spec().type().toString());
            o.addProperty("fused", opt.isFused()); // informative: both keep the same state, as in PyTorch
            JsonArray groups = new JsonArray();
            for (Group g : state.groups()) {
                JsonObject go = new JsonObject();
                go.addProperty("lr", g.lr());
                go.addProperty("size", g.size());
                go.add("options", g.options());
                groups.add(go);
            }
            o.add("groups", groups);
            JsonArray st = new JsonArray();
            keys.clear();
            values.clear();
            for (int i = 0; i < live.size(); i++) {
                ParamState s = state.perParam().get(i);
                if (s == null) {
                    continue;
                }
                JsonObject so = new JsonObject();
                so.addProperty("parameter", names.get(i));
                JsonObject ints = new JsonObject();
                s.ints().forEach(ints::addProperty);
                so.add("ints", ints);
                JsonArray ts = new JsonArray();
                for (Map.Entry<String, Tensor> e : s.tensors().entrySet()) {
                    ts.add(e.getKey());
                    keys.add(names.get(i) + "/" + e.getKey());
                    values.add(e.getValue().detach().cpu());
                }
                so.add("tensors", ts);
                st.add(so);
            }
            o.add("state", st);
            h.add("optimizer", o);
            entries.put(OPTIMIZER, pickleDict(keys, values));
        }
        JsonObject c = new JsonObject();
        c.addProperty("alpha", opt.alpha());
        c.addProperty("beta", opt.beta());
        c.addProperty("check_finite", opt.checkFinite());
        c.addProperty("engine", opt.engineName());
        h.add("constraint", c);
        if (loopState != null) {
            entries.put(LOOP, loopState.getBytes(StandardCharsets.UTF_8));
        }
        JsonObject sums = new JsonObject();
        for (Map.Entry<String, byte[]> e : entries.entrySet()) {
            JsonObject s = new JsonObject();
            s.addProperty("size", e.getValue().length);
            s.addProperty("sha256", sha256(e.getValue()));
            sums.add(e.getKey(), s);
        }
        h.add("entries", sums);
        byte[] headerBytes = GSON.toJson(h).getBytes(StandardCharsets.UTF_8);
        AtomicFile.write(file, tmp -> {
            try (FileOutputStream fos = new FileOutputStream(tmp.toFile());
                 ZipOutputStream zip = new ZipOutputStream(fos)) {
                putStored(zip, HEADER, headerBytes);
                for (Map.Entry<String, byte[]> e : entries.entrySet()) {
                    putStored(zip, e.getKey(), e.getValue());
                }
                zip.finish();
                fos.flush();
                fos.getFD().sync(); // on disk before the rename makes it the checkpoint
            }
        });
    }

    private static void putStored(ZipOutputStream zip, String name, byte[] bytes) throws IOException {
        ZipEntry e = new ZipEntry(name);
        e.setMethod(ZipEntry.STORED);
        e.setSize(bytes.length);
        e.setCompressedSize(bytes.length);
        CRC32 crc = new CRC32();
        crc.update(bytes);
        e.setCrc(crc.getValue());
        e.setTime(0); // the same content gives the same file
        zip.putNextEntry(e);
        zip.write(bytes);
        zip.closeEntry();
    }

    // ---------------------------------------------------------------- reading

    /**
     * Reads and checks a checkpoint: the archive, every entry's CRC and SHA-256, the format version, and that the
     * tensors match the header. Nothing is applied; {@link #restore} does that. A missing, truncated, damaged or
     * foreign file throws {@link IllegalArgumentException} naming the file and what is wrong with it.
     *
     * @param file the checkpoint file
     * @return the checkpoint, holding its tensors on the CPU until {@link #close}
     * @throws IllegalArgumentException if {@code file} is null, missing, unreadable, damaged or not a checkpoint
     */
    public static Checkpoint read(Path file) {
        LibTorch.ensureLoaded();
        Raw raw = readRaw(file, true);
        JsonObject h = raw.header();
        Map<String, byte[]> entries = raw.entries();
        Map<String, Tensor> tensors = null;
        Map<String, Tensor> state = null;
        try {
            tensors = unpickleDict(entries.get(MODEL), file, MODEL);
            state = unpickleDict(entries.get(OPTIMIZER), file, OPTIMIZER);
            Map<String, Tensor> params = new LinkedHashMap<>();
            for (JsonElement pe : h.getAsJsonArray("parameters")) {
                JsonObject p = pe.getAsJsonObject();
                String name = p.get("name").getAsString();
                Tensor t = tensors.get(name);
                if (t == null || !Arrays.equals(t.shape(), longs(p.getAsJsonArray("shape")))
                        || !Tensors.dtype(t).equals(p.get("dtype").getAsString())) {
                    throw new IllegalArgumentException("checkpoint " + file + ": parameter '" + name + "' in "
                            + MODEL + " is " + (t == null ? "missing" : Tensors.describe(t))
                            + ", the header says " + p.get("dtype").getAsString() + p.get("shape"));
                }
                params.put(name, t);
            }
            if (params.size() != tensors.size()) {
                throw new IllegalArgumentException("checkpoint " + file + ": " + MODEL + " holds " + tensors.size()
                        + " tensors, the header lists " + params.size());
            }
            List<ParamState> perParam = new ArrayList<>();
            Map<String, Integer> index = new java.util.HashMap<>();
            for (String name : params.keySet()) {
                index.put(name, perParam.size());
                perParam.add(null);
            }
            int used = 0;
            for (JsonElement se : h.getAsJsonObject("optimizer").getAsJsonArray("state")) {
                JsonObject s = se.getAsJsonObject();
                String name = s.get("parameter").getAsString();
                int i = index.get(name); // parseHeader refused state for a parameter the header does not list
                Map<String, Long> ints = new TreeMap<>();
                for (Map.Entry<String, JsonElement> e : s.getAsJsonObject("ints").entrySet()) {
                    ints.put(e.getKey(), e.getValue().getAsLong());
                }
                Map<String, Tensor> ts = new LinkedHashMap<>();
                for (JsonElement te : s.getAsJsonArray("tensors")) {
                    String key = name + "/" + te.getAsString();
                    Tensor t = state.get(key);
                    if (t == null) {
                        throw new IllegalArgumentException("checkpoint " + file + ": " + OPTIMIZER + " has no tensor '"
                                + key + "'");
                    }
                    ts.put(te.getAsString(), t);
                    used++;
                }
                perParam.set(i, new ParamState(ints, ts));
            }
            if (used != state.size()) {
                throw new IllegalArgumentException("checkpoint " + file + ": " + OPTIMIZER + " holds " + state.size()
                        + " tensors, the header lists " + used);
            }
            byte[] loop = entries.get(LOOP);
            return new Checkpoint(file, h, params, perParam,
                    loop == null ? null : new String(loop, StandardCharsets.UTF_8));
        } catch (RuntimeException e) {
            closeAll(tensors);
            closeAll(state);
            if (e instanceof IllegalArgumentException) {
                throw e;
            }
            throw new IllegalArgumentException("checkpoint " + file + " is malformed: " + e.getMessage(), e);
        }
    }

    /**
     * Whether {@code file} is a text2data checkpoint: a zip archive whose {@code header.json} names this format. Reads
     * the start of the header only; anything else, an unreadable file included, is not one.
     *
     * @param file the file to look at
     * @return whether it is a checkpoint
     */
    public static boolean isCheckpoint(Path file) {
        try (ZipFile zip = new ZipFile(file.toFile())) {
            return isCheckpoint(zip);
        } catch (IOException | RuntimeException notOne) {
            return false;
        }
    }

    /** {@link #isCheckpoint(Path)} on a zip already open (ArchiveCheck's). */
    static boolean isCheckpoint(ZipFile zip) {
        ZipEntry header = zip.getEntry(HEADER);
        if (header == null || header.getSize() > MAX_HEADER) {
            return false;
        }
        try (InputStream in = zip.getInputStream(header)) {
            return new String(in.readNBytes(4096), StandardCharsets.UTF_8).contains("\"" + FORMAT + "\"");
        } catch (IOException | RuntimeException notOne) {
            return false;
        }
    }

    /** A checkpoint file's checked header and its entries' bytes (null for an entry listed but not read). */
    private record Raw(JsonObject header, Map<String, byte[]> entries) {
    }

    /**
     * Opens a checkpoint file: checks the header field by field, reads the entries it lists (with {@code tensors},
     * all of them; without, all but the model's and the optimizer's, which are only seen to be there) with their
     * bounds, CRCs and checksums.
     */
    private static Raw readRaw(Path file, boolean tensors) {
        if (file == null) {
            throw new IllegalArgumentException("checkpoint file is null");
        }
        if (!Files.isRegularFile(file)) {
            throw new IllegalArgumentException(Files.isDirectory(file) ? "checkpoint " + file + " is a folder, not a file"
                    : Files.exists(file) ? "checkpoint " + file + " is not a regular file (a device, FIFO or socket)"
                    : "checkpoint file not found: " + file);
        }
        JsonObject h;
        Map<String, byte[]> entries = new LinkedHashMap<>();
        try (ZipFile zip = new ZipFile(file.toFile())) {
            // the header first, bounded: it says which entries there are and how large each is
            ZipEntry he = zip.getEntry(HEADER);
            if (he == null) {
                throw new IllegalArgumentException("checkpoint " + file + " has no " + HEADER
                        + ": not a text2data checkpoint (entries: "
                        + abbreviate(zip.stream().map(ZipEntry::getName).toList()) + ")");
            }
            h = parseHeader(file, readEntry(zip, he, MAX_HEADER, file));
            JsonObject sums = h.getAsJsonObject("entries");
            boolean headerSeen = false;
            var it = zip.entries();
            while (it.hasMoreElements()) {
                ZipEntry e = it.nextElement();
                String name = e.getName();
                if (name.equals(HEADER) && !headerSeen) {
                    headerSeen = true;
                    continue;
                }
                if (name.equals(HEADER) || entries.containsKey(name)) {
                    throw new IllegalArgumentException("checkpoint " + file + " is damaged: entry " + name
                            + " appears twice; nothing was loaded");
                }
                if (!sums.has(name)) {
                    throw new IllegalArgumentException("checkpoint " + file + " has an entry the header does not list: "
                            + name + " (a text2data checkpoint holds " + HEADER + " and " + sums.keySet()
                            + "); nothing was loaded");
                }
                if (tensors || !(name.equals(MODEL) || name.equals(OPTIMIZER))) {
                    entries.put(name, readEntry(zip, e, sums.getAsJsonObject(name).get("size").getAsLong(), file));
                } else {
                    entries.put(name, null); // listed, seen, not read
                }
            }
        } catch (ZipException e) {
            throw new IllegalArgumentException("checkpoint " + file + " is truncated or damaged, or not a checkpoint "
                    + "(not a readable zip archive: " + e.getMessage() + "); nothing was loaded", e);
        } catch (IOException e) {
            throw new IllegalArgumentException("checkpoint " + file + " cannot be read: " + e.getMessage(), e);
        }
        for (Map.Entry<String, JsonElement> e : h.getAsJsonObject("entries").entrySet()) {
            byte[] bytes = entries.get(e.getKey());
            JsonObject s = e.getValue().getAsJsonObject();
            if (bytes == null && entries.containsKey(e.getKey())) {
                continue; // not read: the tensors' entries, for a summary
            }
            if (bytes == null) {
                throw new IllegalArgumentException("checkpoint " + file + " is damaged: entry " + e.getKey()
                        + " is missing; nothing was loaded");
            }
            if (bytes.length != s.get("size").getAsLong() || !sha256(bytes).equals(s.get("sha256").getAsString())) {
                throw new IllegalArgumentException("checkpoint " + file + " is damaged: entry " + e.getKey()
                        + " does not match its checksum (size " + bytes.length + ", expected "
                        + s.get("size").getAsLong() + "); nothing was loaded");
            }
        }
        return new Raw(h, entries);
    }

    /**
     * A checkpoint file's header and loop position, read and checked as {@link #read} checks them, without its
     * tensors: cheap whatever the model's size, for settings a caller compares before a restore (the CLI's
     * {@code --resume} does). {@link #read} still checks the tensors' entries when the checkpoint is restored.
     *
     * @param file the checkpoint file
     * @return the header ({@link #headerJson}'s form) and the loop position ({@link #loopState}'s, or null)
     * @throws IllegalArgumentException as {@link #read}, for the header and the loop position
     */
    public static Summary summary(Path file) {
        Raw raw = readRaw(file, false);
        byte[] loop = raw.entries().get(LOOP);
        return new Summary(GSON.toJson(raw.header()), loop == null ? null : new String(loop, StandardCharsets.UTF_8));
    }

    /**
     * What {@link #summary} reads.
     *
     * @param headerJson the header, as {@link #headerJson} gives it
     * @param loopState the training loop's position, as {@link #loopState} gives it, or null
     */
    public record Summary(String headerJson, String loopState) {
    }

    /** The most a header may hold: far more than the names, shapes and state fields of any model need. */
    static final long MAX_HEADER = 64L << 20;
    /** The most an entry may hold: what one Java array holds. */
    static final long MAX_ENTRY = Integer.MAX_VALUE - 8;

    /**
     * An entry's bytes, read with a bound: an entry that says or turns out to hold more than {@code limit} bytes
     * (a deflated entry can expand to gigabytes) is refused before it is read in full; then its CRC is checked.
     */
    private static byte[] readEntry(ZipFile zip, ZipEntry e, long limit, Path file) throws IOException {
        String what = e.getName().equals(HEADER) ? "more than the " + (MAX_HEADER >> 20) + " MiB a header may hold"
                : "more than the " + limit + " bytes the header says it holds";
        if (e.getSize() > limit) {
            throw new IllegalArgumentException("checkpoint " + file + " is damaged: entry " + e.getName() + " holds "
                    + e.getSize() + " bytes, " + what + "; nothing was loaded");
        }
        byte[] bytes;
        try (InputStream in = zip.getInputStream(e)) {
            bytes = in.readNBytes((int) limit + 1);
        }
        if (bytes.length > limit) {
            throw new IllegalArgumentException("checkpoint " + file + " is damaged: entry " + e.getName() + " holds "
                    + what + "; nothing was loaded");
        }
        CRC32 crc = new CRC32();
        crc.update(bytes);
        if (e.getCrc() != -1 && crc.getValue() != e.getCrc()) {
            throw new IllegalArgumentException("checkpoint " + file + " is damaged: entry " + e.getName()
                    + " does not match its CRC; nothing was loaded");
        }
        return bytes;
    }

    /**
     * Parses the header and checks every field that reading and restoring use (presence, type and range), so a
     * hand-edited header is refused here, naming the field, before anything is read into or changed in a
     * constraint.
     */
    private static JsonObject parseHeader(Path file, byte[] bytes) {
        JsonElement root;
        try {
            root = JsonParser.parseString(new String(bytes, StandardCharsets.UTF_8));
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("checkpoint " + file + ": " + HEADER + " is not valid JSON: "
                    + e.getMessage(), e);
        }
        if (!root.isJsonObject()) {
            throw new IllegalArgumentException("checkpoint " + file + ": " + HEADER + " is not a JSON object");
        }
        JsonObject h = root.getAsJsonObject();
        JsonElement format = h.get("format");
        if (format == null || !format.isJsonPrimitive() || !FORMAT.equals(format.getAsString())) {
            throw new IllegalArgumentException("checkpoint " + file + " is not a text2data checkpoint (format "
                    + format + ")");
        }
        HeaderCheck c = new HeaderCheck(file);
        long version = c.whole(h, "", "version", Long.MAX_VALUE);
        if (version != VERSION) {
            throw new IllegalArgumentException("checkpoint " + file + " has format version " + version
                    + "; this library reads version " + VERSION);
        }
        JsonObject entries = c.object(h, "", "entries");
        for (String name : entries.keySet()) {
            if (!List.of(MODEL, OPTIMIZER, LOOP).contains(name)) {
                throw c.bad("entries", "lists '" + name + "', which is not an entry of a version " + VERSION
                        + " checkpoint");
            }
        }
        for (String name : List.of(MODEL, OPTIMIZER, LOOP)) {
            if (name.equals(LOOP) && !entries.has(LOOP)) {
                continue;
            }
            JsonObject e = c.object(entries, "entries.", name);
            c.whole(e, "entries." + name + ".", "size", MAX_ENTRY);
            String sha = c.string(e, "entries." + name + ".", "sha256");
            if (!sha.matches("[0-9a-f]{64}")) {
                throw c.bad("entries." + name + ".sha256", "must be a SHA-256 in hex, got " + HeaderCheck.shortly(
                        e.get("sha256")));
            }
        }
        JsonArray ps = c.array(h, "", "parameters");
        Set<String> names = new HashSet<>();
        for (int i = 0; i < ps.size(); i++) {
            String at = "parameters[" + i + "].";
            JsonObject p = c.element(ps, "parameters", i);
            c.unique(names, at + "name", c.string(p, at, "name"));
            JsonArray shape = c.array(p, at, "shape");
            for (int d = 0; d < shape.size(); d++) {
                c.whole(shape.get(d), at + "shape[" + d + "]", Long.MAX_VALUE);
            }
            c.string(p, at, "dtype");
            if (p.has("grad")) {
                c.bool(p, at, "grad");
            }
        }
        JsonObject o = c.object(h, "", "optimizer");
        c.string(o, "optimizer.", "kind");
        JsonArray groups = c.array(o, "optimizer.", "groups");
        long inGroups = 0;
        for (int g = 0; g < groups.size(); g++) {
            String at = "optimizer.groups[" + g + "].";
            JsonObject go = c.element(groups, "optimizer.groups", g);
            c.nonNegative(go, at, "lr");
            inGroups += c.whole(go, at, "size", ps.size());
            c.object(go, at, "options");
        }
        if (inGroups != ps.size()) {
            throw c.bad("optimizer.groups", "hold " + inGroups + " parameters in all, the header lists " + ps.size());
        }
        JsonArray st = c.array(o, "optimizer.", "state");
        Set<String> withState = new HashSet<>();
        for (int i = 0; i < st.size(); i++) {
            String at = "optimizer.state[" + i + "].";
            JsonObject so = c.element(st, "optimizer.state", i);
            String name = c.string(so, at, "parameter");
            if (!names.contains(name)) {
                throw c.bad(at + "parameter", "names '" + name + "', which is not a parameter the header lists");
            }
            c.unique(withState, at + "parameter", name);
            JsonObject ints = c.object(so, at, "ints");
            for (String key : ints.keySet()) {
                c.whole(ints, at + "ints.", key, Long.MAX_VALUE);
            }
            JsonArray ts = c.array(so, at, "tensors");
            Set<String> fields = new HashSet<>();
            for (int t = 0; t < ts.size(); t++) {
                c.unique(fields, at + "tensors[" + t + "]", c.string(ts.get(t), at + "tensors[" + t + "]"));
            }
        }
        JsonObject k = c.object(h, "", "constraint");
        c.nonNegative(k, "constraint.", "alpha");
        c.nonNegative(k, "constraint.", "beta");
        c.bool(k, "constraint.", "check_finite");
        return h;
    }

    /** Reads header fields by name, refusing a missing one or one of the wrong type or range, naming it. */
    private record HeaderCheck(Path file) {
        IllegalArgumentException bad(String field, String what) {
            return new IllegalArgumentException("checkpoint " + file + ": header field '" + field + "' " + what
                    + "; nothing was loaded");
        }

        static String shortly(JsonElement e) {
            String s = String.valueOf(e);
            return s.length() > 60 ? s.substring(0, 57) + "..." : s;
        }

        JsonElement get(JsonObject o, String at, String key) {
            JsonElement e = o.get(key);
            if (e == null || e.isJsonNull()) {
                throw bad(at + key, "is missing");
            }
            return e;
        }

        /** The field, refused (named) when it is not what {@code is} accepts; {@code kind} says what it must be. */
        JsonElement typed(JsonElement e, String field, java.util.function.Predicate<JsonElement> is, String kind) {
            if (!is.test(e)) {
                throw bad(field, "must be " + kind + ", got " + shortly(e));
            }
            return e;
        }

        JsonObject object(JsonObject o, String at, String key) {
            return typed(get(o, at, key), at + key, JsonElement::isJsonObject, "a JSON object").getAsJsonObject();
        }

        JsonObject element(JsonArray a, String field, int i) {
            return typed(a.get(i), field + "[" + i + "]", JsonElement::isJsonObject, "a JSON object").getAsJsonObject();
        }

        JsonArray array(JsonObject o, String at, String key) {
            return typed(get(o, at, key), at + key, JsonElement::isJsonArray, "a JSON array").getAsJsonArray();
        }

        String string(JsonObject o, String at, String key) {
            return string(get(o, at, key), at + key);
        }

        String string(JsonElement e, String field) {
            return typed(e, field, x -> x.isJsonPrimitive() && x.getAsJsonPrimitive().isString(), "a string")
                    .getAsString();
        }

        /** Adds value to seen, refusing one already there (a name or field given twice). */
        void unique(Set<String> seen, String field, String value) {
            if (!seen.add(value)) {
                throw bad(field, "repeats '" + value + "'");
            }
        }

        boolean bool(JsonObject o, String at, String key) {
            return typed(get(o, at, key), at + key, e -> e.isJsonPrimitive() && e.getAsJsonPrimitive().isBoolean(),
                    "true or false").getAsBoolean();
        }

        long whole(JsonObject o, String at, String key, long max) {
            return whole(get(o, at, key), at + key, max);
        }

        long whole(JsonElement e, String field, long max) {
            String want = "must be a whole number >= 0" + (max < Long.MAX_VALUE ? " and <= " + max : "");
            if (e == null || e.isJsonNull()) {
                throw bad(field, "is missing");
            }
            if (!e.isJsonPrimitive() || !e.getAsJsonPrimitive().isNumber()) {
                throw bad(field, want + ", got " + shortly(e));
            }
            long v;
            try {
                v = e.getAsBigDecimal().longValueExact();
            } catch (ArithmeticException | NumberFormatException notWhole) {
                throw bad(field, want + ", got " + shortly(e));
            }
            if (v < 0 || v > max) {
                throw bad(field, want + ", got " + shortly(e));
            }
            return v;
        }

        double nonNegative(JsonObject o, String at, String key) {
            JsonElement e = get(o, at, key);
            double v = Double.NaN;
            if (e.isJsonPrimitive() && e.getAsJsonPrimitive().isNumber()) {
                v = e.getAsDouble();
            }
            if (!Double.isFinite(v) || v < 0) {
                throw bad(at + key, "must be a finite number >= 0, got " + shortly(e));
            }
            return v;
        }
    }

    private static void closeAll(Map<String, Tensor> m) {
        if (m != null) {
            m.values().forEach(Tensor::close);
        }
    }

    // ---------------------------------------------------------------- restoring

    /**
     * Copies this checkpoint into {@code opt}: parameters, the base optimizer's state and every group's learning
     * rate, and the constraint's alpha, beta and finiteness-check flag. First checks that it fits (parameter names,
     * shapes and dtypes; optimizer kind, param groups and options other than the learning rate; no optimizer state
     * in {@code opt} that the checkpoint would leave stale) and refuses with a message listing what does not; on
     * refusal nothing in {@code opt} has changed.
     *
     * @param opt the constraint to restore into
     * @throws IllegalArgumentException if {@code opt} is null or the checkpoint does not fit it
     * @throws IllegalStateException if this checkpoint or {@code opt} is closed, or there is not enough native memory
     *     to stage the optimizer state (it is staged in memory, not in a temporary file)
     */
    public void restore(Constraint opt) {
        checkOpen();
        if (opt == null) {
            throw new IllegalArgumentException("constraint is null");
        }
        opt.checkOpen();
        List<String> problems = new ArrayList<>();
        List<String> names = opt.parameterNames();
        List<Tensor> live = opt.parameters();
        List<String> saved = new ArrayList<>(params.keySet());
        if (!saved.equals(names)) {
            problems.add("parameter names differ: the checkpoint has " + abbreviate(saved) + ", the model "
                    + abbreviate(names));
        } else {
            for (int i = 0; i < live.size(); i++) {
                Tensor s = params.get(saved.get(i));
                Tensor p = live.get(i);
                if (!Arrays.equals(s.shape(), p.shape()) || !Tensors.dtype(s).equals(Tensors.dtype(p))) {
                    problems.add("parameter '" + names.get(i) + "' is " + Tensors.dtype(s) + Arrays.toString(s.shape())
                            + " in the checkpoint, " + Tensors.dtype(p) + Arrays.toString(p.shape()) + " in the model");
                }
            }
        }
        JsonObject o = header.getAsJsonObject("optimizer");
        String kind = o.get("kind").getAsString();
        if (!kind.equals(opt.spec().type().toString())) {
            problems.add("the checkpoint's optimizer is " + kind + ", this one is " + opt.spec().type());
        }
        if (!problems.isEmpty()) {
            throw refused(problems);
        }
        try (PointerScope scope = new PointerScope();
             OptimizerState current = opt.optimizerState()) {
            JsonArray groups = o.getAsJsonArray("groups");
            if (groups.size() != current.groups().size()) {
                problems.add("the checkpoint's optimizer has " + groups.size() + " param groups, this one "
                        + current.groups().size());
            } else {
                for (int g = 0; g < groups.size(); g++) {
                    JsonObject sg = groups.get(g).getAsJsonObject();
                    Group cg = current.groups().get(g);
                    if (sg.get("size").getAsLong() != cg.size()) {
                        problems.add("param group " + g + " has " + sg.get("size").getAsLong()
                                + " parameters in the checkpoint, " + cg.size() + " here");
                    }
                    JsonObject so = sg.getAsJsonObject("options");
                    for (String key : union(so.keySet(), cg.options().keySet())) {
                        if (key.equals("lr")) {
                            continue; // a learning rate is state: schedules change it
                        }
                        if (!Objects.equals(so.get(key), cg.options().get(key))) {
                            problems.add("optimizer option '" + key + "' is " + so.get(key) + " in the checkpoint, "
                                    + cg.options().get(key) + " here");
                        }
                    }
                }
            }
            for (int i = 0; i < live.size() && problems.isEmpty(); i++) {
                ParamState s = optimizerState.get(i);
                if (s == null) {
                    if (current.perParam().get(i) != null) {
                        problems.add("the optimizer has state for parameter '" + names.get(i) + "' and the checkpoint "
                                + "has none: restore into a fresh Constraint");
                    }
                    continue;
                }
                String misfit = opt.isFused() ? opt.fusedStateMismatch(s) : null;
                if (misfit != null) {
                    problems.add("the optimizer state of parameter '" + names.get(i) + "' " + misfit);
                }
                for (Map.Entry<String, Tensor> e : s.tensors().entrySet()) {
                    Tensor t = e.getValue();
                    Tensor p = live.get(i);
                    if (!Arrays.equals(t.shape(), p.shape()) || !Tensors.dtype(t).equals(Tensors.dtype(p))) {
                        problems.add("optimizer state '" + e.getKey() + "' of parameter '" + names.get(i) + "' is "
                                + Tensors.dtype(t) + Arrays.toString(t.shape()) + ", the parameter "
                                + Tensors.dtype(p) + Arrays.toString(p.shape()));
                    }
                }
            }
            JsonObject c = header.getAsJsonObject("constraint");
            double alpha = c.get("alpha").getAsDouble();
            double beta = c.get("beta").getAsDouble();
            if (!Double.isFinite(alpha) || alpha < 0 || !Double.isFinite(beta) || beta < 0) {
                problems.add("the checkpoint's alpha and beta (" + alpha + ", " + beta + ") are not finite numbers >= 0");
            }
            if (!problems.isEmpty()) {
                throw refused(problems);
            }
            if (opt.isFused()) {
                opt.loadFusedState(optimizerState); // checked above to fit: nothing here can refuse
            } else {
                try (ArchiveBytes archive = stagedArchive(opt.baseOptimizer(), live)) {
                    // Rehearse on a scratch optimizer over copies of the parameters: whatever libtorch objects to
                    // shows here, before the live optimizer is touched; and what it loaded must be what was saved.
                    TensorVector copies = new TensorVector();
                    for (Tensor p : live) {
                        copies.push_back(p.detach().clone());
                    }
                    try (Optimizer scratch = opt.spec().create(copies)) {
                        loadArchive(scratch, archive);
                        try (OptimizerState check = readOptimizer(scratch, live.size())) {
                            requireSameState(check);
                        }
                    } catch (RuntimeException e) {
                        if (e instanceof IllegalArgumentException) {
                            throw e;
                        }
                        throw new IllegalArgumentException("checkpoint " + source + ": libtorch refused its optimizer state: "
                                + TorchScriptModel.firstLine(e.getMessage()) + "; nothing was restored", e);
                    }
                    loadArchive(opt.baseOptimizer(), archive);
                }
            }
            JsonArray savedParams = header.getAsJsonArray("parameters");
            try (NoGradGuard ng = new NoGradGuard()) {
                for (int i = 0; i < live.size(); i++) {
                    Tensor p = live.get(i);
                    p.detach().copy_(params.get(names.get(i)));
                    // Whether a gradient exists is state: zero_grad keeps gradients (PyTorch 1.13), and a kept
                    // zero unconditional gradient projects where a missing one does not.
                    JsonElement grad = savedParams.get(i).getAsJsonObject().get("grad");
                    if (grad != null && grad.getAsBoolean()) {
                        if (p.grad().defined()) {
                            p.grad().zero_();
                        } else {
                            p.mutable_grad().put(torch.zeros_like(p));
                        }
                    } else if (grad != null && p.grad().defined()) {
                        p.mutable_grad().put(new Tensor());
                    }
                }
            }
            for (int g = 0; g < groups.size(); g++) {
                opt.paramGroups().get(g).setLr(groups.get(g).getAsJsonObject().get("lr").getAsDouble());
            }
            opt.setAlpha(alpha);
            opt.setBeta(beta);
            opt.setCheckFinite(c.get("check_finite").getAsBoolean());
        }
    }

    private IllegalArgumentException refused(List<String> problems) {
        return new IllegalArgumentException("checkpoint " + source + " does not fit this model and optimizer: "
                + String.join("; ", problems) + "; nothing was restored");
    }

    private void requireSameState(OptimizerState loaded) {
        for (int i = 0; i < optimizerState.size(); i++) {
            ParamState want = optimizerState.get(i);
            ParamState got = loaded.perParam().get(i);
            if (want == null) {
                continue;
            }
            boolean same = got != null && got.ints().equals(want.ints())
                    && got.tensors().keySet().equals(want.tensors().keySet());
            if (same) {
                for (Map.Entry<String, Tensor> e : want.tensors().entrySet()) {
                    same &= torch.equal(got.tensors().get(e.getKey()).cpu(), e.getValue());
                }
            }
            if (!same) {
                throw new IllegalArgumentException("checkpoint " + source + ": libtorch did not load the optimizer state "
                        + "of parameter #" + i + " as saved (fields " + want.ints().keySet() + " "
                        + want.tensors().keySet() + "); nothing was restored");
            }
        }
    }

    private static List<String> union(Iterable<String> a, Iterable<String> b) {
        List<String> out = new ArrayList<>();
        a.forEach(out::add);
        for (String s : b) {
            if (!out.contains(s)) {
                out.add(s);
            }
        }
        return out;
    }

    private static String abbreviate(List<String> names) {
        return names.size() <= 8 ? names.toString()
                : names.subList(0, 8).toString().replace("]", ", ... (" + names.size() + " in all)]");
    }

    // ---------------------------------------------------------------- accessors

    /**
     * The training loop's position saved with the parameters (JSON text), or null when none was.
     *
     * @return the loop state as JSON text, or null
     */
    public String loopState() {
        return loopState;
    }

    /**
     * The file this checkpoint was read from.
     *
     * @return the checkpoint file
     */
    public Path source() {
        return source;
    }

    /**
     * The parameter names, in order.
     *
     * @return an unmodifiable list of the parameter names
     */
    public List<String> parameterNames() {
        return List.copyOf(params.keySet());
    }

    /**
     * The optimizer kind ({@code adam}, {@code sgd}, ...).
     *
     * @return the optimizer's name, as {@link OptimizerSpec.Type#toString} writes it
     */
    public String optimizerKind() {
        return header.getAsJsonObject("optimizer").get("kind").getAsString();
    }

    /**
     * The parameters as saved (CPU tensors owned by this checkpoint; valid until {@link #close}).
     *
     * @return an unmodifiable map from parameter name to tensor, in order
     * @throws IllegalStateException if this checkpoint is closed
     */
    public Map<String, Tensor> parameters() {
        checkOpen();
        return java.util.Collections.unmodifiableMap(params);
    }

    /**
     * The header (see the class comment), as JSON text.
     *
     * @return the header as compact JSON text
     */
    public String headerJson() {
        return GSON.toJson(header);
    }

    /** The base optimizer's state per parameter (null where it has none), as saved. */
    List<ParamState> optimizerState() {
        return optimizerState;
    }

    @Override
    public void close() {
        if (!closed) {
            closed = true;
            params.values().forEach(Tensor::close);
            for (ParamState s : optimizerState) {
                if (s != null) {
                    s.tensors().values().forEach(Tensor::close);
                }
            }
        }
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("this Checkpoint is closed");
        }
    }

    // ---------------------------------------------------------------- libtorch's optimizer archive

    /**
     * The optimizer as libtorch serializes it ({@code Optimizer::save}), read back as an archive of independent
     * tensors. The archive is staged in native memory, never in a file: nothing in {@code java.io.tmpdir} is
     * written, and a full or unwritable temporary folder cannot fail it. The archive belongs to the caller's
     * pointer scope.
     */
    static InputArchive savedArchive(Optimizer optimizer) {
        OutputArchive out = new OutputArchive();
        optimizer.save(out);
        try (ArchiveBytes bytes = ArchiveBytes.of(out)) {
            return bytes.load();
        }
    }

    /**
     * An archive serialized by libtorch ({@code OutputArchive::save_to} with a writer function) into native
     * memory that grows as it is written; {@link #load} reads it back ({@code InputArchive::load_from(data,
     * size)}), as often as needed. No file is involved, so libtorch's file writer, which terminates the process
     * when a write fails (a full disk), is never used.
     */
    static final class ArchiveBytes implements AutoCloseable {
        /** The buffer the calling thread's {@code save_to} writes into: the one writer function is shared. */
        private static final ThreadLocal<ArchiveBytes> TARGET = new ThreadLocal<>();
        private static ArchiveWriter writer;

        private Pointer data; // malloc'd: no deallocator, so no pointer scope can free it early
        private long size;
        private long capacity;
        private boolean outOfMemory;

        static ArchiveBytes of(OutputArchive out) {
            ArchiveBytes b = new ArchiveBytes();
            ArchiveWriter w = writer();
            ArchiveBytes outer = TARGET.get();
            TARGET.set(b);
            try {
                out.save_to(w);
            } catch (RuntimeException | Error e) {
                b.close();
                throw e;
            } finally {
                TARGET.set(outer);
            }
            if (b.outOfMemory) {
                long wanted = b.capacity;
                b.close();
                throw new IllegalStateException("not enough native memory to stage the optimizer's state ("
                        + wanted + " bytes and more)");
            }
            return b;
        }

        private static synchronized ArchiveWriter writer() {
            if (writer == null) {
                ArchiveWriter w = new ArchiveWriter() {
                    @Override
                    public long call(Pointer src, long n) {
                        ArchiveBytes b = TARGET.get();
                        if (b != null) {
                            b.append(src, n);
                        }
                        // never a short count: libtorch's error path for one is not ours to take, and a
                        // failed allocation is reported by of() once save_to returns
                        return n;
                    }
                };
                w.retainReference(); // kept for the JVM's lifetime, whatever pointer scope the first call runs in
                writer = w;
            }
            return writer;
        }

        private void append(Pointer src, long n) {
            if (outOfMemory || n <= 0) {
                return;
            }
            if (size + n > capacity) {
                long grown = Math.max(size + n, Math.max(1 << 16, capacity + (capacity >> 1)));
                Pointer p = data == null ? Pointer.malloc(grown) : Pointer.realloc(data, grown);
                if (p == null || p.isNull()) {
                    outOfMemory = true;
                    capacity = grown;
                    return;
                }
                data = p;
                capacity = grown;
            }
            BytePointer at = new BytePointer(data).position(size);
            if (src == null || src.isNull()) {
                Pointer.memset(at, 0, n); // libtorch skips over bytes it fills in later
            } else {
                Pointer.memcpy(at, src, n);
            }
            size += n;
        }

        /** A new archive read from these bytes; it shares nothing with them. */
        InputArchive load() {
            InputArchive in = new InputArchive();
            in.load_from(new BytePointer(data).position(0), size);
            return in;
        }

        @Override
        public void close() {
            if (data != null) {
                Pointer.free(data);
                data = null;
            }
        }
    }

    /**
     * The state of a libtorch optimizer, read through its own serialization ({@code Optimizer::save}), which keys
     * per-parameter state by tensor address and lists each group's parameters by the same keys: mapped here to the
     * parameters' positions. Tensors are independent copies.
     */
    static OptimizerState readOptimizer(Optimizer optimizer, int nParams) {
        try (PointerScope scope = new PointerScope()) {
            InputArchive in = savedArchive(optimizer);
            InputArchive groupsArchive = new InputArchive();
            in.read("param_groups", groupsArchive);
            Tensor size = new Tensor();
            groupsArchive.read("param_groups/size", size);
            List<Group> groups = new ArrayList<>();
            Map<String, Integer> index = new LinkedHashMap<>();
            for (long g = 0; g < size.item_long(); g++) {
                InputArchive ga = new InputArchive();
                groupsArchive.read("param_groups/" + g, ga);
                Tensor n = new Tensor();
                ga.read("params/size", n);
                for (long j = 0; j < n.item_long(); j++) {
                    IValue key = new IValue();
                    ga.read("params/" + j, key);
                    index.put(key.toStringRef().getString(), index.size());
                }
                InputArchive oa = new InputArchive();
                ga.read("options", oa);
                JsonObject options = new JsonObject();
                StringVector keys = oa.keys();
                for (long k = 0; k < keys.size(); k++) {
                    String key = keys.get(k).getString();
                    IValue v = new IValue();
                    oa.read(key, v);
                    options.add(key, toJson(v));
                }
                groups.add(new Group(options.get("lr").getAsDouble(), n.item_long(), options));
            }
            if (index.size() != nParams) {
                throw new IllegalStateException("the optimizer holds " + index.size() + " parameters, the constraint "
                        + nParams);
            }
            List<ParamState> perParam = new ArrayList<>();
            for (int i = 0; i < nParams; i++) {
                perParam.add(null);
            }
            InputArchive stateArchive = new InputArchive();
            in.read("state", stateArchive);
            StringVector keys = stateArchive.keys();
            for (long k = 0; k < keys.size(); k++) {
                String key = keys.get(k).getString();
                Integer i = index.get(key);
                if (i == null) {
                    throw new IllegalStateException("the optimizer holds state for a tensor that is not a parameter");
                }
                InputArchive sa = new InputArchive();
                stateArchive.read(key, sa);
                Map<String, Long> ints = new TreeMap<>();
                Map<String, Tensor> tensors = new TreeMap<>();
                StringVector fields = sa.keys();
                for (long f = 0; f < fields.size(); f++) {
                    String field = fields.get(f).getString();
                    IValue v = new IValue();
                    sa.read(field, v);
                    if (v.isTensor()) {
                        Tensor t = v.toTensor();
                        if (t.defined()) {
                            Tensor copy = t.detach().clone();
                            copy.retainReference(); // outlives the scope
                            tensors.put(field, copy);
                        }
                    } else if (v.isInt()) {
                        ints.put(field, v.toInt());
                    } else {
                        throw new IllegalStateException("optimizer state field '" + field + "' holds a "
                                + v.tagKind().getString() + ", which this library does not save");
                    }
                }
                perParam.set(i, new ParamState(ints, tensors));
            }
            return new OptimizerState(perParam, groups);
        }
    }

    /**
     * Writes this checkpoint's optimizer state in the layout {@code Optimizer::load} reads, with the options of
     * {@code live} (checked equal, learning rate aside) and the checkpoint's learning rates.
     */
    private ArchiveBytes stagedArchive(Optimizer live, List<Tensor> liveParams) {
        try (PointerScope scope = new PointerScope()) {
            InputArchive cur = savedArchive(live);
            OutputArchive out = new OutputArchive();
            IValue version = new IValue();
            cur.read("pytorch_version", version);
            out.write("pytorch_version", version);
            OutputArchive state = new OutputArchive(out.compilation_unit());
            for (int i = 0; i < optimizerState.size(); i++) {
                ParamState s = optimizerState.get(i);
                if (s == null) {
                    continue;
                }
                OutputArchive ps = new OutputArchive(out.compilation_unit());
                Tensor p = liveParams.get(i);
                for (Map.Entry<String, Long> e : s.ints().entrySet()) {
                    ps.write(e.getKey(), new IValue(e.getValue().longValue()));
                }
                for (Map.Entry<String, Tensor> e : s.tensors().entrySet()) {
                    ps.write(e.getKey(), new IValue(e.getValue().to(p.device(), p.scalar_type()).clone()));
                }
                state.write(String.valueOf(i + 1), ps);
            }
            out.write("state", state);
            InputArchive curGroups = new InputArchive();
            cur.read("param_groups", curGroups);
            OutputArchive groups = new OutputArchive(out.compilation_unit());
            JsonArray savedGroups = header.getAsJsonObject("optimizer").getAsJsonArray("groups");
            groups.write("param_groups/size", longTensor(savedGroups.size()));
            int next = 0;
            for (int g = 0; g < savedGroups.size(); g++) {
                InputArchive cg = new InputArchive();
                curGroups.read("param_groups/" + g, cg);
                InputArchive co = new InputArchive();
                cg.read("options", co);
                OutputArchive ga = new OutputArchive(out.compilation_unit());
                long n = savedGroups.get(g).getAsJsonObject().get("size").getAsLong();
                ga.write("params/size", longTensor(n));
                for (long j = 0; j < n; j++) {
                    ga.write("params/" + j, new IValue(String.valueOf(++next)));
                }
                OutputArchive options = new OutputArchive(out.compilation_unit());
                StringVector keys = co.keys();
                for (long k = 0; k < keys.size(); k++) {
                    String key = keys.get(k).getString();
                    IValue v = new IValue();
                    co.read(key, v);
                    options.write(key, key.equals("lr")
                            ? new IValue(savedGroups.get(g).getAsJsonObject().get("lr").getAsDouble()) : v);
                }
                ga.write("options", options);
                groups.write("param_groups/" + g, ga);
            }
            out.write("param_groups", groups);
            return ArchiveBytes.of(out);
        }
    }

    private static void loadArchive(Optimizer optimizer, ArchiveBytes archive) {
        try (PointerScope scope = new PointerScope()) {
            optimizer.load(archive.load());
        }
    }

    private static Tensor longTensor(long v) {
        return torch.scalar_tensor(new Scalar(v), new TensorOptions(torch.ScalarType.Long));
    }

    private static JsonElement toJson(IValue v) {
        if (v.isDouble()) {
            return new JsonPrimitive(v.toDouble());
        }
        if (v.isBool()) {
            return new JsonPrimitive(v.toBool());
        }
        if (v.isInt()) {
            return new JsonPrimitive(v.toInt());
        }
        if (v.isString()) {
            return new JsonPrimitive(v.toStringRef().getString());
        }
        if (v.isTuple()) {
            JsonArray a = new JsonArray();
            var elements = v.toTuple().elements();
            for (long i = 0; i < elements.size(); i++) {
                a.add(toJson(elements.get(i)));
            }
            return a;
        }
        if (v.isNone()) {
            return com.google.gson.JsonNull.INSTANCE;
        }
        return new JsonPrimitive("<" + v.tagKind().getString() + ">");
    }

    // ---------------------------------------------------------------- torch.save dicts

    /**
     * {@code torch.save}'s format for a {@code Dict[str, Tensor]}, built by two small TorchScript functions (the
     * bindings offer no typed dict constructor): {@code empty()}, then {@code put(d, key, value)} per entry.
     */
    private static byte[] pickleDict(List<String> keys, List<Tensor> values) {
        Function[] f = dictFunctions();
        try (PointerScope scope = new PointerScope()) {
            // a copy: TorchScript may hand out one shared dict for the literal {}, which put must not fill
            IValue dict = new IValue(f[0].apply(new IValueVector()).toGenericDict().copy());
            for (int i = 0; i < keys.size(); i++) {
                dict = f[1].apply(new IValueVector(dict, new IValue(keys.get(i)), new IValue(values.get(i))));
            }
            ByteVector bytes = torch.pickle_save(dict);
            return bytes.get();
        }
    }

    private static synchronized Function[] dictFunctions() {
        if (dictFunctions == null) {
            CompilationUnit cu = torch.compile("""
                    def empty() -> Dict[str, Tensor]:
                        d: Dict[str, Tensor] = {}
                        return d

                    def put(d: Dict[str, Tensor], key: str, value: Tensor) -> Dict[str, Tensor]:
                        d[key] = value
                        return d
                    """);
            // kept for the JVM's lifetime, whatever PointerScope the first call runs in
            cu.retainReference();
            dictUnit = cu;
            Function empty = cu.get_function(new QualifiedName("empty"));
            Function put = cu.get_function(new QualifiedName("put"));
            empty.retainReference();
            put.retainReference();
            dictFunctions = new Function[] {empty, put};
        }
        return dictFunctions;
    }

    private static Map<String, Tensor> unpickleDict(byte[] bytes, Path file, String entry) {
        Map<String, Tensor> out = new LinkedHashMap<>();
        ArchiveCheck.check(bytes, "checkpoint " + file + ": " + entry); // a short tensor record would be read past
        try (PointerScope scope = new PointerScope(); ByteVector v = new ByteVector(bytes)) {
            IValue root = torch.pickle_load(v);
            if (!root.isGenericDict()) {
                throw new IllegalArgumentException("checkpoint " + file + ": " + entry + " holds a "
                        + root.tagKind().getString() + ", expected a dict of tensors");
            }
            GenericDict dict = root.toGenericDict();
            GenericDictIterator end = dict.end();
            for (GenericDictIterator it = dict.begin(); it.notEquals(end); it.increment()) {
                GenericDictEntryRef e = it.access();
                IValue val = e.value();
                if (!e.key().isString() || !val.isTensor()) {
                    throw new IllegalArgumentException("checkpoint " + file + ": " + entry
                            + " holds something other than named tensors");
                }
                Tensor t = new Tensor(val.toTensor());
                t.retainReference(); // outlives the scope
                out.put(e.key().toStringRef().getString(), t);
            }
            return out;
        } catch (RuntimeException e) {
            out.values().forEach(Tensor::close);
            if (e instanceof IllegalArgumentException) {
                throw e;
            }
            throw new IllegalArgumentException("checkpoint " + file + ": " + entry + " cannot be read: "
                    + TorchScriptModel.firstLine(e.getMessage()), e);
        }
    }

    private static JsonArray shape(Tensor t) {
        JsonArray a = new JsonArray();
        for (long s : t.shape()) {
            a.add(s);
        }
        return a;
    }

    private static long[] longs(JsonArray a) {
        long[] out = new long[a.size()];
        for (int i = 0; i < out.length; i++) {
            out[i] = a.get(i).getAsLong();
        }
        return out;
    }

    private static String sha256(byte[] bytes) {
        try {
            return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
