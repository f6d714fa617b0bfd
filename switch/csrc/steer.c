/* The fanout steering program (steer.h).  The kernel runs it at the packet socket's
 * receive hook, where the frame's data starts at the network header (the Ethernet
 * header and an offloaded VLAN tag are already off) and skb->protocol says which. */
#include "steer.h"

#include <linux/if_ether.h>

#define L(code, k) BPF_STMT(code, k)
#define J(code, k, jt, jf) BPF_JUMP(code, k, jt, jf)

/* Jumps are relative to the next instruction; each target's index is in a comment. */
static struct sock_filter prog[] = {
    /* 0 */ L(BPF_LD | BPF_H | BPF_ABS, (uint32_t)(SKF_AD_OFF + SKF_AD_PROTOCOL)),
    /* 1 */ J(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IP, 2, 0),          /* -> 4 */
    /* 2 */ J(BPF_JMP | BPF_JEQ | BPF_K, ETH_P_IPV6, 17, 0),       /* -> 20 */
    /* 3 */ L(BPF_RET | BPF_K, 0),
    /* 4: IPv4 */
    /* 4 */ L(BPF_LD | BPF_H | BPF_ABS, 6),                        /* flags, fragment offset */
    /* 5 */ J(BPF_JMP | BPF_JSET | BPF_K, 0x3fff, 9, 0),           /* a fragment: -> 15 */
    /* 6 */ L(BPF_LD | BPF_B | BPF_ABS, 9),                        /* protocol */
    /* 7 */ J(BPF_JMP | BPF_JEQ | BPF_K, 6, 2, 0),                 /* -> 10 */
    /* 8 */ J(BPF_JMP | BPF_JEQ | BPF_K, 17, 1, 0),                /* -> 10 */
    /* 9 */ J(BPF_JMP | BPF_JEQ | BPF_K, 132, 0, 5),               /* -> 10, else 15 */
    /* 10: IPv4 ports */
    /* 10 */ L(BPF_LDX | BPF_B | BPF_MSH, 0),                      /* X = header length */
    /* 11 */ L(BPF_LD | BPF_H | BPF_IND, 0),                       /* source port */
    /* 12 */ L(BPF_ST, 0),
    /* 13 */ L(BPF_LD | BPF_H | BPF_IND, 2),                       /* destination port */
    /* 14 */ L(BPF_JMP | BPF_JA, 36),                              /* -> 51 */
    /* 15: IPv4 addresses */
    /* 15 */ L(BPF_LD | BPF_W | BPF_ABS, 12),
    /* 16 */ L(BPF_MISC | BPF_TAX, 0),
    /* 17 */ L(BPF_LD | BPF_W | BPF_ABS, 16),
    /* 18 */ L(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 19 */ L(BPF_JMP | BPF_JA, 35),                              /* -> 55 */
    /* 20: IPv6 */
    /* 20 */ L(BPF_LD | BPF_B | BPF_ABS, 6),                       /* next header */
    /* 21 */ J(BPF_JMP | BPF_JEQ | BPF_K, 6, 2, 0),                /* -> 24 */
    /* 22 */ J(BPF_JMP | BPF_JEQ | BPF_K, 17, 1, 0),               /* -> 24 */
    /* 23 */ J(BPF_JMP | BPF_JEQ | BPF_K, 132, 0, 4),              /* -> 24, else 28 */
    /* 24: IPv6 ports */
    /* 24 */ L(BPF_LD | BPF_H | BPF_ABS, 40),
    /* 25 */ L(BPF_ST, 0),
    /* 26 */ L(BPF_LD | BPF_H | BPF_ABS, 42),
    /* 27 */ L(BPF_JMP | BPF_JA, 23),                              /* -> 51 */
    /* 28: the xor of both IPv6 addresses' eight words */
    /* 28 */ L(BPF_LD | BPF_W | BPF_ABS, 8),
    /* 29 */ L(BPF_MISC | BPF_TAX, 0),
    /* 30 */ L(BPF_LD | BPF_W | BPF_ABS, 12),
    /* 31 */ L(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 32 */ L(BPF_MISC | BPF_TAX, 0),
    /* 33 */ L(BPF_LD | BPF_W | BPF_ABS, 16),
    /* 34 */ L(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 35 */ L(BPF_MISC | BPF_TAX, 0),
    /* 36 */ L(BPF_LD | BPF_W | BPF_ABS, 20),
    /* 37 */ L(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 38 */ L(BPF_MISC | BPF_TAX, 0),
    /* 39 */ L(BPF_LD | BPF_W | BPF_ABS, 24),
    /* 40 */ L(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 41 */ L(BPF_MISC | BPF_TAX, 0),
    /* 42 */ L(BPF_LD | BPF_W | BPF_ABS, 28),
    /* 43 */ L(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 44 */ L(BPF_MISC | BPF_TAX, 0),
    /* 45 */ L(BPF_LD | BPF_W | BPF_ABS, 32),
    /* 46 */ L(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 47 */ L(BPF_MISC | BPF_TAX, 0),
    /* 48 */ L(BPF_LD | BPF_W | BPF_ABS, 36),
    /* 49 */ L(BPF_ALU | BPF_XOR | BPF_X, 0),
    /* 50 */ L(BPF_JMP | BPF_JA, 4),                               /* -> 55 */
    /* 51: the larger port (A: destination, M[0]: source) */
    /* 51 */ L(BPF_MISC | BPF_TAX, 0),
    /* 52 */ L(BPF_LD | BPF_MEM, 0),
    /* 53 */ J(BPF_JMP | BPF_JGT | BPF_X, 0, 1, 0),                /* source larger: -> 55 */
    /* 54 */ L(BPF_MISC | BPF_TXA, 0),
    /* 55: mix */
    /* 55 */ L(BPF_ALU | BPF_MUL | BPF_K, STEER_MIX),
    /* 56 */ L(BPF_ALU | BPF_RSH | BPF_K, 16),
    /* 57 */ L(BPF_RET | BPF_A, 0),
};
_Static_assert(sizeof prog / sizeof prog[0] == 58, "the jumps' targets are counted so");

static const struct sock_fprog fprog = {sizeof prog / sizeof prog[0], prog};

const struct sock_fprog *steer_program(void) { return &fprog; }
