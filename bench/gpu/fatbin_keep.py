"""Blanks, in place, the GPU code of a shared library for every architecture but the ones kept.

    python3 bench/gpu/fatbin_keep.py LIB.so 90[,100,...]

For carrying bytedeco's libtorch_cuda.so to a GPU machine in fewer parts (java-bundle.sh --keep-sm): it holds
SASS for sm_75, 80, 90, 100, 103, 120 and 121 (345 MB of its 504), of which one GPU runs one. Each entry of the
.nv_fatbin section (a fatbin: 16-byte header, then entries, each a header and a padded payload) keeps its header
and size; only the payloads of the ELF (SASS) entries of the other architectures become zeros, which compress to
nothing. The CUDA runtime picks an entry by its header's architecture, so a GPU of a kept architecture loads the
same code as before; on any other GPU the library reports that no kernel image is available for the device.
PTX entries are kept whatever their architecture (they are what a newer GPU would compile). Prints what it blanked.
"""

import mmap
import struct
import sys

FATBIN_MAGIC = 0xBA55ED50
KIND_ELF = 2


def sections(m):
    shoff, = struct.unpack_from("<Q", m, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", m, 0x3A)
    hdr = [struct.unpack_from("<IIQQQQIIQQ", m, shoff + i * shentsize) for i in range(shnum)]
    strtab = hdr[shstrndx][4]
    return {m[strtab + h[0]:m.find(b"\0", strtab + h[0])].decode(): (h[4], h[5]) for h in hdr}


def entries(m, path):
    """(kind, arch, payload offset, padded size) of every entry of every fatbin in the .nv_fatbin section."""
    secs = sections(m)
    if ".nv_fatbin" not in secs:
        raise SystemExit(f"{path}: no .nv_fatbin section")
    off, size = secs[".nv_fatbin"]
    pos, end, out = off, off + size, []
    while pos < end:
        magic, _, hsize, fsize = struct.unpack_from("<IHHQ", m, pos)
        if magic != FATBIN_MAGIC:  # fatbins are 8-byte aligned, with padding between
            pos += 8
            continue
        p, e = pos + hsize, pos + hsize + fsize
        while p < e:
            kind, _, ehsize, padded = struct.unpack_from("<HHIQ", m, p)
            arch, = struct.unpack_from("<I", m, p + 28)
            out.append((kind, arch, p + ehsize, padded))
            p += ehsize + padded
        if p != e:
            raise SystemExit(f"{path}: fatbin at {pos:#x} does not end where its header says: not changed")
        pos = e
    return out


def main(path, keep):
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        if m[:4] != b"\x7fELF" or m[4] != 2:
            raise SystemExit(f"{path}: not a 64-bit ELF file")
        found = entries(m, path)  # all of it read and checked before anything is written
        if not any(kind == KIND_ELF and arch in keep for kind, arch, _, _ in found):
            archs = sorted({arch for kind, arch, _, _ in found if kind == KIND_ELF})
            raise SystemExit(f"{path}: no GPU code of sm_{sorted(keep)} in it (it has sm_{archs}): not changed")
        blanked, kept = {}, {}
        for kind, arch, at, padded in found:
            into = kept
            if kind == KIND_ELF and arch not in keep:
                m[at:at + padded] = bytes(padded)
                into = blanked
            into[arch] = into.get(arch, 0) + padded
        m.flush()
    mb = lambda d: ", ".join(f"sm_{a} {n / 1e6:.1f} MB" for a, n in sorted(d.items()))
    print(f"{path}: {len(found)} entries; kept {mb(kept)}; blanked {mb(blanked)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], {int(a) for a in sys.argv[2].split(",")})
