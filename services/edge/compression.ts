import zlib from "node:zlib";
import type { Compression } from "@connectrpc/connect/protocol";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { asClientsFault } from "../../lib/errors.js";

/**
 * Messages up to this size are gzipped synchronously. Node's async gzip runs
 * each call through a Transform stream and the thread pool: for a history
 * page of a few KB that costs three to four times the CPU of compressing it
 * (about 150–230 µs against 50 here), while a synchronous call holds the event
 * loop for well under a millisecond. Larger messages go the async way.
 */
export const gzipSyncMaxBytes = 32 * 1024;

/**
 * What the edge decompresses is a client's request: a body zlib cannot read
 * to its end (truncated, say) is the client's error, which Connect reports as
 * INTERNAL for every zlib code it does not list. Its size limit stays
 * RESOURCE_EXHAUSTED.
 */
function clientsFault(decompress: Compression["decompress"]): Compression["decompress"] {
  return (bytes, readMaxBytes) =>
    decompress(bytes, readMaxBytes).catch((err: unknown) => {
      throw asClientsFault(err, "request body could not be decompressed");
    });
}

/**
 * gzip as Connect's own (same name, same output format, same decompression
 * with its limit), with small messages compressed in one synchronous call.
 * Responses over Connect's compressMinBytes (1 KB) to a client that accepts
 * gzip, such as history pages, take this path.
 */
export const gzipCompression: Compression = {
  name: compressionGzip.name,
  compress(bytes) {
    if (bytes.length > gzipSyncMaxBytes) return compressionGzip.compress(bytes);
    const out = zlib.gzipSync(bytes);
    return Promise.resolve(new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
  },
  decompress: clientsFault((bytes, readMaxBytes) =>
    compressionGzip.decompress(bytes, readMaxBytes),
  ),
};

const brotliCompression: Compression = {
  ...compressionBrotli,
  decompress: clientsFault((bytes, readMaxBytes) =>
    compressionBrotli.decompress(bytes, readMaxBytes),
  ),
};

/** What the edge accepts and answers with, in order of preference (Connect's defaults' order). */
export const edgeCompressions: Compression[] = [gzipCompression, brotliCompression];
