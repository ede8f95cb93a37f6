/**
 * The strict MessagePack subset of the wire (protocol-spec §3), read and written without a general-purpose library:
 * nil, booleans, integers, strings (valid UTF-8), binary, arrays and maps. Extension types (any of them, the
 * timestamp included) and floats are not part of the subset, and the reader refuses them, as it refuses a
 * truncated value and a non-string map key, with `MALFORMED`. The reader does not build values on its own: the
 * codec asks for the kind its schema expects at each position, so nothing is allocated for a frame it refuses.
 * No Node built-ins (it runs in browsers).
 * @internal
 */
import { MalformedError } from './errors.js';
import { utf8, bytesHex, writeHex } from './hex.js';

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Refuse a frame: `MALFORMED`, naming the field. */
export function malformed(path: string, what: string): never {
  throw new MalformedError(`${path}: ${what}`, { details: { field: path } });
}

/** What a type byte introduces, for error messages. */
function typeName(b: number): string {
  if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xd3)) return 'an integer';
  if (b <= 0x8f || b === 0xde || b === 0xdf) return 'a map';
  if (b <= 0x9f || b === 0xdc || b === 0xdd) return 'an array';
  if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) return 'a string';
  if (b === 0xc0) return 'nil';
  if (b === 0xc2 || b === 0xc3) return 'a boolean';
  if (b >= 0xc4 && b <= 0xc6) return 'binary';
  if (b === 0xca || b === 0xcb) return 'a float (not allowed)';
  if ((b >= 0xc7 && b <= 0xc9) || (b >= 0xd4 && b <= 0xd8)) return 'an extension type (not allowed)';
  return 'an unused type byte';
}

/** A cursor over one frame. Each `read…` consumes one value of the expected type or throws `MALFORMED`. */
export class Reader {
  readonly b: Uint8Array;
  p = 0;
  /** Length of the last binary or string read (its bytes start at `start`). */
  len = 0;
  start = 0;

  constructor(bytes: Uint8Array) {
    this.b = bytes;
  }

  /** Bytes left. */
  get left(): number {
    return this.b.length - this.p;
  }

  #need(n: number, path: string): void {
    if (this.p + n > this.b.length) malformed(path, 'truncated');
  }

  #type(path: string): number {
    if (this.p >= this.b.length) malformed(path, 'truncated');
    return this.b[this.p++]!;
  }

  #be(n: number, path: string): number {
    this.#need(n, path);
    const b = this.b;
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + b[this.p++]!;
    return v;
  }

  #wrong(t: number, path: string, expected: string): never {
    return malformed(path, `expected ${expected}, got ${typeName(t)}`);
  }

  /** The next type byte, not consumed (or -1 at the end). */
  peek(): number {
    return this.p < this.b.length ? this.b[this.p]! : -1;
  }

  /** Consume a nil if one is next. */
  nil(): boolean {
    if (this.b[this.p] === 0xc0 && this.p < this.b.length) {
      this.p++;
      return true;
    }
    return false;
  }

  mapHeader(path: string): number {
    const t = this.#type(path);
    if (t >= 0x80 && t <= 0x8f) return t & 0x0f;
    if (t === 0xde) return this.#be(2, path);
    if (t === 0xdf) return this.#be(4, path);
    return this.#wrong(t, path, 'a map');
  }

  arrayHeader(path: string): number {
    const t = this.#type(path);
    if (t >= 0x90 && t <= 0x9f) return t & 0x0f;
    if (t === 0xdc) return this.#be(2, path);
    if (t === 0xdd) return this.#be(4, path);
    return this.#wrong(t, path, 'an array');
  }

  bool(path: string): boolean {
    const t = this.#type(path);
    if (t === 0xc2) return false;
    if (t === 0xc3) return true;
    return this.#wrong(t, path, 'a boolean');
  }

  /** A non-negative integer of any width, at most `max` (≤ 2^53 − 1). */
  uint(path: string, max: number): number {
    const t = this.#type(path);
    let v: number;
    if (t <= 0x7f) v = t;
    else if (t === 0xcc || t === 0xd0) v = this.#be(1, path);
    else if (t === 0xcd || t === 0xd1) v = this.#be(2, path);
    else if (t === 0xce || t === 0xd2) v = this.#be(4, path);
    else if (t === 0xcf || t === 0xd3) {
      const hi = this.#be(4, path);
      const lo = this.#be(4, path);
      if (hi >= 0x200000) return malformed(path, `integer above ${max}`);
      v = hi * 0x100000000 + lo;
    } else if (t >= 0xe0) return malformed(path, 'negative integer');
    else return this.#wrong(t, path, 'an integer');
    // Signed encodings with the sign bit set are negative.
    if (
      (t === 0xd0 && v >= 0x80) ||
      (t === 0xd1 && v >= 0x8000) ||
      (t === 0xd2 && v >= 0x80000000) ||
      (t === 0xd3 && v >= 2 ** 63)
    ) {
      return malformed(path, 'negative integer');
    }
    if (v > max) return malformed(path, `integer above ${max}`);
    return v;
  }

  /** A binary value of at most `max` bytes; its bytes are at `start`, `len`. */
  bin(path: string, max: number): void {
    const t = this.#type(path);
    let n: number;
    if (t === 0xc4) n = this.#be(1, path);
    else if (t === 0xc5) n = this.#be(2, path);
    else if (t === 0xc6) n = this.#be(4, path);
    else return this.#wrong(t, path, 'binary');
    if (n > max) malformed(path, `binary longer than ${max} bytes`);
    this.#need(n, path);
    this.start = this.p;
    this.len = n;
    this.p += n;
  }

  /** A binary value of exactly `n` bytes, as lowercase `0x` hex. */
  hex(path: string, n: number): `0x${string}` {
    this.bin(path, n);
    if (this.len !== n) malformed(path, `expected ${n} bytes, got ${this.len}`);
    return bytesHex(this.b, this.start, this.len);
  }

  /** A binary value as a fresh copy. */
  bytes(path: string, max: number): Uint8Array {
    this.bin(path, max);
    // A plain copy, also when the frame is a Node Buffer (whose `slice` would return a view).
    const n = this.len;
    const out = new Uint8Array(n);
    if (n <= 128) {
      const b = this.b;
      const s = this.start;
      for (let i = 0; i < n; i++) out[i] = b[s + i]!;
    } else out.set(this.b.subarray(this.start, this.start + n));
    return out;
  }

  /**
   * A string of at most `maxBytes` bytes, not decoded: its bytes are at `start`, `len` (for comparing a key with
   * the names the schema knows, all ASCII, without building a string).
   */
  strRange(path: string, maxBytes: number): void {
    const t = this.#type(path);
    let n: number;
    if (t >= 0xa0 && t <= 0xbf) n = t & 0x1f;
    else if (t === 0xd9) n = this.#be(1, path);
    else if (t === 0xda) n = this.#be(2, path);
    else if (t === 0xdb) n = this.#be(4, path);
    else return this.#wrong(t, path, 'a string');
    if (n > maxBytes) malformed(path, `string longer than ${maxBytes} bytes`);
    this.#need(n, path);
    this.start = this.p;
    this.len = n;
    this.p += n;
  }

  /** Whether the last string or binary read has exactly these bytes. */
  is(name: Uint8Array): boolean {
    if (this.len !== name.length) return false;
    const b = this.b;
    const s = this.start;
    for (let i = 0; i < name.length; i++) if (b[s + i] !== name[i]) return false;
    return true;
  }

  /** A string of at most `maxBytes` UTF-8 bytes, which must be valid UTF-8. */
  str(path: string, maxBytes: number): string {
    this.strRange(path, maxBytes);
    const b = this.b;
    const start = this.start;
    const n = this.len;
    if (n <= 32) {
      let s = '';
      for (let i = start; i < start + n; i++) {
        const c = b[i]!;
        if (c >= 0x80) return this.#utf8(start, n, path);
        s += String.fromCharCode(c);
      }
      return s;
    }
    return this.#utf8(start, n, path);
  }

  #utf8(start: number, n: number, path: string): string {
    try {
      return utf8Decoder.decode(this.b.subarray(start, start + n));
    } catch {
      return malformed(path, 'invalid UTF-8');
    }
  }

  /**
   * Skip one value of the subset, nested at most `maxDepth` arrays or maps deep, without building it. The depth is
   * checked before descending, so a hostile frame cannot drive the reader into deep recursion.
   */
  skip(path: string, maxDepth: number): void {
    const t = this.#type(path);
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3) return;
    let n: number;
    if ((t >= 0x80 && t <= 0x9f) || t === 0xdc || t === 0xdd || t === 0xde || t === 0xdf) {
      if (maxDepth <= 0) malformed(path, 'nested too deeply');
      const isMap = t <= 0x8f || t >= 0xde;
      n = t <= 0x9f ? t & 0x0f : this.#be(t === 0xdc || t === 0xde ? 2 : 4, path);
      for (let i = 0; i < n; i++) {
        if (isMap) this.str(path, 64);
        this.skip(path, maxDepth - 1);
      }
      return;
    }
    if (t >= 0xcc && t <= 0xd3) n = 1 << (t & 0x03);
    else if (t >= 0xa0 && t <= 0xbf) {
      this.p--;
      this.str(path, this.left);
      return;
    } else if (t >= 0xd9 && t <= 0xdb) {
      this.p--;
      this.str(path, this.left);
      return;
    } else if (t >= 0xc4 && t <= 0xc6) n = this.#be(1 << (t - 0xc4), path);
    else return this.#wrong(t, path, 'a value of the protocol');
    this.#need(n, path);
    this.p += n;
  }
}

/** A growable output buffer writing the minimal encoding of each value. */
export class Writer {
  b: Uint8Array;
  p = 0;

  constructor(size = 256) {
    this.b = new Uint8Array(size);
  }

  #room(n: number): void {
    if (this.p + n <= this.b.length) return;
    const next = new Uint8Array(Math.max(this.b.length * 2, this.p + n));
    next.set(this.b.subarray(0, this.p));
    this.b = next;
  }

  #head(fix: number, fixMax: number, n: number, t8: number, t16: number, t32: number): void {
    this.#room(5);
    const b = this.b;
    if (n <= fixMax) b[this.p++] = fix | n;
    else if (t8 !== 0 && n <= 0xff) {
      b[this.p++] = t8;
      b[this.p++] = n;
    } else if (n <= 0xffff) {
      b[this.p++] = t16;
      b[this.p++] = n >>> 8;
      b[this.p++] = n & 0xff;
    } else {
      b[this.p++] = t32;
      b[this.p++] = n >>> 24;
      b[this.p++] = (n >>> 16) & 0xff;
      b[this.p++] = (n >>> 8) & 0xff;
      b[this.p++] = n & 0xff;
    }
  }

  map(n: number): void {
    this.#head(0x80, 15, n, 0, 0xde, 0xdf);
  }

  array(n: number): void {
    this.#head(0x90, 15, n, 0, 0xdc, 0xdd);
  }

  nil(): void {
    this.#room(1);
    this.b[this.p++] = 0xc0;
  }

  bool(v: boolean): void {
    this.#room(1);
    this.b[this.p++] = v ? 0xc3 : 0xc2;
  }

  /** A non-negative integer ≤ 2^32 − 1. */
  uint(v: number): void {
    this.#room(5);
    const b = this.b;
    if (v <= 0x7f) b[this.p++] = v;
    else if (v <= 0xff) {
      b[this.p++] = 0xcc;
      b[this.p++] = v;
    } else if (v <= 0xffff) {
      b[this.p++] = 0xcd;
      b[this.p++] = v >>> 8;
      b[this.p++] = v & 0xff;
    } else {
      b[this.p++] = 0xce;
      b[this.p++] = v >>> 24;
      b[this.p++] = (v >>> 16) & 0xff;
      b[this.p++] = (v >>> 8) & 0xff;
      b[this.p++] = v & 0xff;
    }
  }

  str(s: string): void {
    let ascii = true;
    for (let i = 0; i < s.length; i++) {
      if (s.charCodeAt(i) >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (!ascii) {
      const bytes = utf8(s);
      this.#head(0xa0, 31, bytes.length, 0xd9, 0xda, 0xdb);
      this.#room(bytes.length);
      this.b.set(bytes, this.p);
      this.p += bytes.length;
      return;
    }
    this.#head(0xa0, 31, s.length, 0xd9, 0xda, 0xdb);
    this.#room(s.length);
    const b = this.b;
    for (let i = 0; i < s.length; i++) b[this.p++] = s.charCodeAt(i);
  }

  binHeader(n: number): void {
    this.#head(0, -1, n, 0xc4, 0xc5, 0xc6);
    this.#room(n);
  }

  bin(bytes: Uint8Array): void {
    this.binHeader(bytes.length);
    this.b.set(bytes, this.p);
    this.p += bytes.length;
  }

  /** `0x` hex (even length, checked by the caller's types) as binary. @throws MalformedError when it is not hex */
  binHex(hex: string): void {
    const n = (hex.length - 2) >>> 1;
    this.binHeader(n);
    writeHex(this.b, this.p, hex, n);
    this.p += n;
  }

  /** The bytes written (a view: copy before writing more). */
  done(): Uint8Array {
    return this.b.subarray(0, this.p);
  }
}
