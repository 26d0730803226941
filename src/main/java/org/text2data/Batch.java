package org.text2data;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
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
 */
public record Batch(Tensor data, Tensor cond, Tensor label) implements AutoCloseable {

    public static final List<String> KEYS = List.of("data", "cond", "label");

    public Batch {
        if (data == null || label == null) {
            throw new IllegalArgumentException("data and label are required");
        }
    }

    /** Data without conditions, for pretraining. */
    public static Batch unlabelled(Tensor data, Tensor label) {
        return new Batch(data, null, label);
    }

    /** Whether every row has a condition. */
    public boolean labelled() {
        return cond != null;
    }

    /** Number of rows. */
    public long size() {
        return data.size(0);
    }

    /** Loads a {@code torch.save} dict with keys data, cond, label; problems name the file and key. */
    public static Batch load(Path file) {
        LibTorch.ensureLoaded();
        if (file == null || !Files.isRegularFile(file)) {
            throw new IllegalArgumentException("data file not found: " + file);
        }
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new IllegalArgumentException("data file " + file + " cannot be read: " + e.getMessage(), e);
        }
        IValue root;
        try (ByteVector v = new ByteVector(bytes)) {
            root = torch.pickle_load(v);
        } catch (RuntimeException e) {
            throw new IllegalArgumentException("data file " + file + " is not a torch.save file: "
                    + TorchScriptModel.firstLine(e.getMessage()), e);
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
            if (found[i].dim() < 1 || found[i].size(0) != found[0].size(0)) {
                throw new IllegalArgumentException("data file " + file + ": '" + KEYS.get(i) + "' has shape "
                        + java.util.Arrays.toString(found[i].shape()) + " but 'data' has "
                        + found[0].size(0) + " rows");
            }
        }
        return new Batch(found[0], found[1], found[2]);
    }

    /** Rows {@code [from, to)}, sharing memory. */
    public Batch slice(long from, long to) {
        return new Batch(data.narrow(0, from, to - from), cond == null ? null : cond.narrow(0, from, to - from),
                label.narrow(0, from, to - from));
    }

    /** Rows at {@code index} (a 1-D int64 tensor), copied. */
    public Batch select(Tensor index) {
        return new Batch(data.index_select(0, index), cond == null ? null : cond.index_select(0, index),
                label.index_select(0, index));
    }

    /** This batch on another device. */
    public Batch to(String device) {
        try (org.bytedeco.pytorch.Device d = new org.bytedeco.pytorch.Device(device)) {
            return new Batch(data.to(d, data.scalar_type()), cond == null ? null : cond.to(d, cond.scalar_type()),
                    label.to(d, label.scalar_type()));
        }
    }

    @Override
    public void close() {
        data.close();
        if (cond != null) {
            cond.close();
        }
        label.close();
    }
}
