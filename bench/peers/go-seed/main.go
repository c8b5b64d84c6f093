// The tutorial's Go design (../shared/seed), as a benchmark peer: franz-go + Pebble, the loop
// exactly as the seed describes it — an in-memory overlay, one changelog record per delta,
// ProduceSync, a Pebble batch committed with Sync, then CommitUncommittedOffsets — and a
// goroutine that emits the top-N every flush interval.
//
// For the benchmark it prints one JSON line {"first_record_ms": ...} when it consumes its
// first record; the driver watches the group's commits and stops it with SIGTERM.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/twmb/franz-go/pkg/kgo"
)

type order struct {
	Items []struct {
		Drink    string  `json:"drink"`
		Quantity float64 `json:"quantity"`
	} `json:"items"`
}

// countDrinks: the seed's pure function, with the same validity rules as the Rust guest.
func countDrinks(value []byte) (map[string]uint64, error) {
	var o order
	if err := json.Unmarshal(value, &o); err != nil {
		return nil, err
	}
	if len(o.Items) == 0 {
		return nil, errors.New("order has no items")
	}
	out := make(map[string]uint64, len(o.Items))
	for _, it := range o.Items {
		q := it.Quantity
		if it.Drink == "" || q < 1 || q > 1_000_000 || q != float64(uint64(q)) {
			return nil, fmt.Errorf("bad item %q x %v", it.Drink, q)
		}
		out[it.Drink] += uint64(q)
	}
	return out, nil
}

func encodeUint64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func readUint64(db *pebble.DB, key []byte) (uint64, error) {
	v, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	defer closer.Close()
	return binary.BigEndian.Uint64(v), nil
}

type drinkCounter struct {
	client         *kgo.Client
	store          *pebble.DB
	changelogTopic string
	outputTopic    string
	topN           int
	mu             sync.Mutex
}

func (d *drinkCounter) flushTopN(ctx context.Context) error {
	type row struct {
		Key   string `json:"key"`
		Count uint64 `json:"count"`
	}
	var rows []row
	iter, err := d.store.NewIter(nil)
	if err != nil {
		return err
	}
	for iter.First(); iter.Valid(); iter.Next() {
		rows = append(rows, row{string(iter.Key()), binary.BigEndian.Uint64(iter.Value())})
	}
	iter.Close()
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Count != rows[j].Count {
			return rows[i].Count > rows[j].Count
		}
		return rows[i].Key < rows[j].Key
	})
	if len(rows) > d.topN {
		rows = rows[:d.topN]
	}
	body, _ := json.Marshal(map[string]any{"generated_at_ms": time.Now().UnixMilli(), "top": rows})
	return d.client.ProduceSync(ctx, &kgo.Record{Topic: d.outputTopic, Value: body}).FirstErr()
}

func main() {
	brokers := flag.String("brokers", "127.0.0.1:9092", "bootstrap servers")
	input := flag.String("input", "brew.orders.v1", "input topic")
	changelog := flag.String("changelog", "brew.drink-count-changelog", "changelog topic")
	output := flag.String("output", "brew.drink-counts", "output topic")
	group := flag.String("group", "drink-count", "consumer group")
	stateDir := flag.String("state-dir", "./state", "Pebble directory")
	flush := flag.Duration("flush", 5*time.Second, "top-N interval")
	topN := flag.Int("top-n", 10, "board size")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	client, err := kgo.NewClient(
		kgo.SeedBrokers(*brokers),
		kgo.ConsumerGroup(*group),
		kgo.ConsumeTopics(*input),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		panic(err)
	}
	defer client.Close()
	store, err := pebble.Open(*stateDir, &pebble.Options{})
	if err != nil {
		panic(err)
	}
	defer store.Close()
	d := &drinkCounter{client: client, store: store, changelogTopic: *changelog, outputTopic: *output, topN: *topN}

	go func() {
		t := time.NewTicker(*flush)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := d.flushTopN(ctx); err != nil && ctx.Err() == nil {
					fmt.Fprintln(os.Stderr, "flush:", err)
				}
			}
		}
	}()

	first := true
	for ctx.Err() == nil {
		fetches := client.PollFetches(ctx)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			break
		}
		if fetches.NumRecords() > 0 && first {
			first = false
			fmt.Printf("{\"first_record_ms\": %d}\n", time.Now().UnixMilli())
		}
		overlay := make(map[string]uint64)
		var produces []*kgo.Record
		fetches.EachRecord(func(rec *kgo.Record) {
			deltas, err := countDrinks(rec.Value)
			if err != nil {
				return // skip a malformed order, don't crash the pipeline
			}
			for drink, delta := range deltas {
				cur, ok := overlay[drink]
				if !ok {
					cur, _ = readUint64(d.store, []byte(drink))
				}
				cur += delta
				overlay[drink] = cur
				produces = append(produces, &kgo.Record{Topic: d.changelogTopic, Key: []byte(drink), Value: encodeUint64(cur)})
			}
		})
		if err := client.ProduceSync(ctx, produces...).FirstErr(); err != nil {
			fmt.Fprintln(os.Stderr, "changelog produce:", err)
			os.Exit(1)
		}
		batch := d.store.NewBatch()
		for drink, count := range overlay {
			_ = batch.Set([]byte(drink), encodeUint64(count), nil)
		}
		if err := batch.Commit(pebble.Sync); err != nil {
			fmt.Fprintln(os.Stderr, "pebble batch commit:", err)
			os.Exit(1)
		}
		if err := client.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "commit offsets:", err)
			os.Exit(1)
		}
	}
}
