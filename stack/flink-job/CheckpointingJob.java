// A small stateful, checkpointing Flink 2.x job for streamguard's tests.
//
// Built by stack/lib.sh (javac -cp "$FLINK_HOME/lib/*"), submitted by stack/flink-submit-job.
//
//   DataGeneratorSource (counter, rate limited)  -> map "counter" (operator state, markers)
//   -> keyBy(value % 4) -> process "sum" (keyed ValueState) -> DiscardingSink
//
// Options (all optional):
//   --interval-ms N            checkpoint interval (default 2000)
//   --checkpoint-timeout-ms N  checkpoint timeout (default 10000)
//   --rate N                   records per second (default 10)
//   --fail-marker PATH         while PATH exists, every checkpoint fails in the "counter" operator:
//   --fail-mode async|sync       async (default): its state serializer throws in the asynchronous
//                                part of the snapshot, the task declines the checkpoint and keeps
//                                RUNNING (failures are tolerated, see --tolerable-failures);
//                                sync: snapshotState throws, which fails the task, so the job
//                                restarts (RESTARTING/RUNNING) besides failing checkpoints
//   --stall-marker PATH        while PATH exists, checkpoints stall and expire:
//   --stall-mode sync|async      sync (default): snapshotState sleeps checkpoint timeout + 2 s
//                                (blocks the task: no records flow meanwhile);
//                                async: the asynchronous part sleeps, records keep flowing
//   --tolerable-failures N     checkpoint failures tolerated before the job fails over
//                              (default Integer.MAX_VALUE)
//   --job-name NAME            default "streamguard-checkpointing-job"
import java.io.File;
import java.io.IOException;
import java.io.Serializable;
import java.util.Collections;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.RichMapFunction;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.common.typeutils.SimpleTypeSerializerSnapshot;
import org.apache.flink.api.common.typeutils.TypeSerializerSnapshot;
import org.apache.flink.api.common.typeutils.base.TypeSerializerSingleton;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.core.memory.DataInputView;
import org.apache.flink.core.memory.DataOutputView;
import org.apache.flink.runtime.state.FunctionInitializationContext;
import org.apache.flink.runtime.state.FunctionSnapshotContext;
import org.apache.flink.streaming.api.checkpoint.CheckpointedFunction;
import org.apache.flink.streaming.api.environment.CheckpointConfig;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.util.Collector;

public class CheckpointingJob {

    public static void main(String[] args) throws Exception {
        long intervalMs = 2000;
        long timeoutMs = 10000;
        double rate = 10;
        String failMarker = null;
        String stallMarker = null;
        String failMode = "async";
        String stallMode = "sync";
        int tolerable = Integer.MAX_VALUE;
        String jobName = "streamguard-checkpointing-job";
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            String v = (i + 1 < args.length) ? args[i + 1] : null;
            if (v == null) {
                throw new IllegalArgumentException("missing value for " + a);
            }
            switch (a) {
                case "--interval-ms": intervalMs = Long.parseLong(v); break;
                case "--checkpoint-timeout-ms": timeoutMs = Long.parseLong(v); break;
                case "--rate": rate = Double.parseDouble(v); break;
                case "--fail-marker": failMarker = v; break;
                case "--stall-marker": stallMarker = v; break;
                case "--fail-mode": failMode = v; break;
                case "--stall-mode": stallMode = v; break;
                case "--tolerable-failures": tolerable = Integer.parseInt(v); break;
                case "--job-name": jobName = v; break;
                default: throw new IllegalArgumentException("unknown option " + a);
            }
            i++;
        }
        if (!failMode.equals("async") && !failMode.equals("sync")) {
            throw new IllegalArgumentException("--fail-mode must be async or sync");
        }
        if (!stallMode.equals("async") && !stallMode.equals("sync")) {
            throw new IllegalArgumentException("--stall-mode must be async or sync");
        }
        long stallMs = timeoutMs + 2000;
        Markers sync = new Markers(failMode.equals("sync") ? failMarker : null,
                stallMode.equals("sync") ? stallMarker : null, stallMs);
        Markers async = new Markers(failMode.equals("async") ? failMarker : null,
                stallMode.equals("async") ? stallMarker : null, stallMs);

        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.enableCheckpointing(intervalMs);
        CheckpointConfig cc = env.getCheckpointConfig();
        cc.setCheckpointTimeout(timeoutMs);
        cc.setTolerableCheckpointFailureNumber(tolerable);
        cc.setMaxConcurrentCheckpoints(1);

        DataGeneratorSource<Long> source = new DataGeneratorSource<>(
                (GeneratorFunction<Long, Long>) n -> n,
                Long.MAX_VALUE,
                RateLimiterStrategy.perSecond(rate),
                Types.LONG);

        env.fromSource(source, WatermarkStrategy.noWatermarks(), "counter-source")
                .uid("counter-source")
                .map(new MarkerCounter(sync, async))
                .uid("counter")
                .name("counter")
                .keyBy(v -> v % 4)
                .process(new KeyedSum())
                .uid("sum")
                .name("sum")
                .sinkTo(new DiscardingSink<>())
                .uid("discard")
                .name("discard");

        env.execute(jobName);
    }

    /** Where and how long to fail / stall; a null path disables that behaviour. */
    public static final class Markers implements Serializable {
        private static final long serialVersionUID = 1L;
        final String failMarker;
        final String stallMarker;
        final long stallMs;

        Markers(String failMarker, String stallMarker, long stallMs) {
            this.failMarker = failMarker;
            this.stallMarker = stallMarker;
            this.stallMs = stallMs;
        }

        /** Throws while the fail marker exists, sleeps while the stall marker exists. */
        void apply(String where) {
            if (failMarker != null && new File(failMarker).exists()) {
                throw new RuntimeException("streamguard fail marker " + failMarker
                        + " present: failing checkpoint (" + where + ")");
            }
            if (stallMarker != null && new File(stallMarker).exists()) {
                try {
                    Thread.sleep(stallMs);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new RuntimeException("stalled checkpoint interrupted", e);
                }
            }
        }
    }

    /** Counts records in operator state; its snapshot obeys the fail/stall markers. */
    public static class MarkerCounter extends RichMapFunction<Long, Long> implements CheckpointedFunction {
        private static final long serialVersionUID = 1L;
        private final Markers sync;
        private final Markers async;
        private transient ListState<Long> countState;
        private long count;

        public MarkerCounter(Markers sync, Markers async) {
            this.sync = sync;
            this.async = async;
        }

        @Override
        public Long map(Long value) {
            count++;
            return value;
        }

        @Override
        public void snapshotState(FunctionSnapshotContext ctx) throws Exception {
            sync.apply("snapshotState of checkpoint " + ctx.getCheckpointId());
            countState.update(Collections.singletonList(count));
        }

        @Override
        public void initializeState(FunctionInitializationContext ctx) throws Exception {
            countState = ctx.getOperatorStateStore().getListState(
                    new ListStateDescriptor<>("count", new MarkerLongSerializer(async)));
            count = 0;
            for (Long c : countState.get()) {
                count += c;
            }
        }
    }

    /**
     * A Long serializer whose serialize() obeys the markers. Operator state is written in the
     * asynchronous part of a checkpoint, so a throw there makes the task decline the
     * checkpoint (CHECKPOINT_ASYNC_EXCEPTION) without failing the task.
     */
    public static final class MarkerLongSerializer extends TypeSerializerSingleton<Long> {
        private static final long serialVersionUID = 1L;
        private final Markers markers; // null when restored from a snapshot

        public MarkerLongSerializer(Markers markers) {
            this.markers = markers;
        }

        @Override public boolean isImmutableType() { return true; }
        @Override public Long createInstance() { return 0L; }
        @Override public Long copy(Long from) { return from; }
        @Override public Long copy(Long from, Long reuse) { return from; }
        @Override public int getLength() { return 8; }

        @Override
        public void serialize(Long record, DataOutputView target) throws IOException {
            if (markers != null) {
                markers.apply("asynchronous state snapshot");
            }
            target.writeLong(record);
        }

        @Override public Long deserialize(DataInputView source) throws IOException { return source.readLong(); }
        @Override public Long deserialize(Long reuse, DataInputView source) throws IOException { return source.readLong(); }
        @Override public void copy(DataInputView source, DataOutputView target) throws IOException { target.writeLong(source.readLong()); }
        @Override public TypeSerializerSnapshot<Long> snapshotConfiguration() { return new MarkerLongSerializerSnapshot(); }
    }

    public static final class MarkerLongSerializerSnapshot extends SimpleTypeSerializerSnapshot<Long> {
        public MarkerLongSerializerSnapshot() {
            super(() -> new MarkerLongSerializer(null));
        }
    }

    /** Keyed running sum in ValueState. */
    public static class KeyedSum extends KeyedProcessFunction<Long, Long, Long> {
        private static final long serialVersionUID = 1L;
        private transient ValueState<Long> sum;

        @Override
        public void open(org.apache.flink.api.common.functions.OpenContext ctx) {
            sum = getRuntimeContext().getState(new ValueStateDescriptor<>("sum", Types.LONG));
        }

        @Override
        public void processElement(Long value, Context ctx, Collector<Long> out) throws Exception {
            Long s = sum.value();
            long next = (s == null ? 0 : s) + value;
            sum.update(next);
            out.collect(next);
        }
    }
}
