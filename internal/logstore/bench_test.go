package logstore

import (
	"fmt"
	"testing"
)

// BenchmarkAppend measures the append path, compression included, in the
// master's usual shape: 4 KiB writes of build-like output.
func BenchmarkAppend(b *testing.B) {
	for _, max := range []int64{0, 1 << 20} {
		b.Run(fmt.Sprintf("max=%d", max), func(b *testing.B) {
			d, _ := openDir(b, Options{MaxBytes: max})
			data := testData(1<<20, 1)
			const piece = 4 << 10
			b.SetBytes(piece)
			b.ReportAllocs()
			var id int64 = 1
			off := 0
			for b.Loop() {
				if off+piece > len(data) {
					off = 0
				}
				if err := d.Append(id, data[off:off+piece]); err != nil {
					b.Fatal(err)
				}
				off += piece
			}
			if err := d.Finish(id); err != nil {
				b.Fatal(err)
			}
		})
	}
}
