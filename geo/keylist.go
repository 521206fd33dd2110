package geo

import (
	"fmt"
	"iter"
)

// keyList is the list of dirty entries' keys: IPv4 keys (almost every one)
// in 4 bytes, IPv6 in 16. On a first start every IP is dirty at once, so as
// a []key the list was 16 bytes an IP (41 MB at 2.35M IPs, with append's
// spare capacity); this is 4.
//
// Its order is fixed: every IPv4 key in the order appended, then every IPv6
// key in the order appended. Index i names the same key for as long as
// nothing is appended, which is what Flush relies on: it takes the list,
// writes it in ranges of indexes and, after a failure, tells the copied
// keys (indexes below its progress) from those it had not reached. A flush
// writes a range's IPv4 keys before the IPv6 ones appended between them;
// within one transaction that changes nothing but the rowids new rows get.
type keyList struct {
	v4 [][4]byte
	v6 []key
}

func (l *keyList) append(k key) {
	if k4, ok := split4(k); ok {
		l.v4 = append(l.v4, k4)
		return
	}
	l.v6 = append(l.v6, k)
}

func (l *keyList) len() int { return len(l.v4) + len(l.v6) }

// at returns the key at index i, 0 <= i < len().
func (l *keyList) at(i int) key {
	if i < len(l.v4) {
		return join4(l.v4[i])
	}
	return l.v6[i-len(l.v4)]
}

// span iterates over the keys at indexes [from, to) in order, with their
// indexes. Like slicing, it panics unless 0 <= from <= to <= len().
func (l *keyList) span(from, to int) iter.Seq2[int, key] {
	if from < 0 || from > to || to > l.len() {
		panic(fmt.Sprintf("geo: keyList span [%d:%d] out of range with length %d", from, to, l.len()))
	}
	return func(yield func(int, key) bool) {
		n4 := len(l.v4)
		for i := from; i < min(to, n4); i++ {
			if !yield(i, join4(l.v4[i])) {
				return
			}
		}
		for i := max(from, n4); i < to; i++ {
			if !yield(i, l.v6[i-n4]) {
				return
			}
		}
	}
}

// all iterates over every key in order, with its index.
func (l *keyList) all() iter.Seq2[int, key] { return l.span(0, l.len()) }
