/* CRC32c (Castagnoli), SCTP's checksum (twin: kp_proto/sctp.py).
 *
 * Why a file of its own: SCTP has no pseudo-header and no ones'-complement sum, so the
 * RFC 1624 arithmetic of csum.h does not apply to it; a rewrite of an SCTP port needs the
 * CRC over the whole SCTP packet computed again.  This is the one per-packet pass over a
 * payload that kp-switch makes, so it is table-driven (slicing by 8, 8 KiB of tables
 * built at load) and uses the SSE4.2 crc32 instruction when the CPU has it. */
#ifndef KP_CRC32C_H
#define KP_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC32c of len bytes continuing from crc (0 to start; a previous result to go on). */
uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t len);
/* The same through one implementation: 0 the tables, 1 SSE4.2 (returns 0 and sets
 * *ok = 0 when the CPU lacks it).  For tests. */
uint32_t crc32c_impl(int which, uint32_t crc, const uint8_t *p, size_t len, int *ok);

#define SCTP_CSUM_OFFSET 8      /* the checksum field, in the common header (kp_proto.sctp) */

/* The CRC32c an SCTP packet of len bytes (common header and chunks) should carry: its
 * checksum field (bytes 8..11) taken as zero.  len >= 12. */
uint32_t sctp_crc(const uint8_t *sctp, size_t len);
/* The checksum as stored (least significant byte first, RFC 9260 appendix A). */
uint32_t sctp_crc_stored(const uint8_t *sctp);
void sctp_crc_store(uint8_t *sctp, uint32_t crc);

#endif
