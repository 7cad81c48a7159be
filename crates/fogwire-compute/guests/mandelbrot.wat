;; Renders the Mandelbrot set as a greyscale PGM image, one band of rows
;; per task: `program [width] [height] [iterations]` (defaults 512 512
;; 200). Task FOGWIRE_TASK of FOGWIRE_TASKS renders its share of the rows;
;; task 0 also writes the PGM header, so the tasks' outputs joined in
;; order are the whole image. Deterministic: the same bytes on every
;; worker (floating point in WebAssembly is IEEE 754, NaNs canonical).
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get"
    (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get"
    (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 2)

  ;; Layout: 0..64 scratch (iovec, sizes), 1024.. argv pointers,
  ;; 1536.. environ pointers, 2048..6144 argv strings, 6144..10240
  ;; environ strings, 65536.. the output.
  (global $out i32 (i32.const 65536))

  ;; The decimal number in the NUL-terminated string at $p (after an '='
  ;; if there is one); $default if it has no digits.
  (func $number (param $p i32) (param $default i32) (result i32)
    (local $c i32) (local $acc i32) (local $digits i32)
    (block $end
      (loop $next
        (local.set $c (i32.load8_u (local.get $p)))
        (br_if $end (i32.eqz (local.get $c)))
        (if (i32.eq (local.get $c) (i32.const 61))
          (then (local.set $acc (i32.const 0)) (local.set $digits (i32.const 0))))
        (if (i32.and (i32.ge_u (local.get $c) (i32.const 48))
                     (i32.le_u (local.get $c) (i32.const 57)))
          (then
            (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 10))
                                     (i32.sub (local.get $c) (i32.const 48))))
            (local.set $digits (i32.add (local.get $digits) (i32.const 1)))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    (if (result i32) (local.get $digits)
      (then (local.get $acc)) (else (local.get $default))))

  ;; Writes $v in decimal at $at; returns where it ended.
  (func $decimal (param $v i32) (param $at i32) (result i32)
    (local $len i32) (local $i i32) (local $t i32)
    (local.set $t (local.get $v))
    (loop $count
      (local.set $len (i32.add (local.get $len) (i32.const 1)))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (br_if $count (local.get $t)))
    (local.set $i (local.get $len))
    (local.set $t (local.get $v))
    (loop $digit
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $at) (local.get $i))
        (i32.add (i32.const 48) (i32.rem_u (local.get $t) (i32.const 10))))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (br_if $digit (local.get $i)))
    (i32.add (local.get $at) (local.get $len)))

  (func $byte (param $b i32) (param $at i32) (result i32)
    (i32.store8 (local.get $at) (local.get $b))
    (i32.add (local.get $at) (i32.const 1)))

  (func (export "_start")
    (local $argc i32) (local $envc i32)
    (local $width i32) (local $height i32) (local $iterations i32)
    (local $task i32) (local $tasks i32)
    (local $y i32) (local $y_end i32) (local $x i32) (local $i i32)
    (local $at i32) (local $start i32) (local $need i32)
    (local $cx f64) (local $cy f64) (local $zx f64) (local $zy f64) (local $t f64)
    ;; Arguments: argv[1..4].
    (drop (call $args_sizes_get (i32.const 0) (i32.const 4)))
    (local.set $argc (i32.load (i32.const 0)))
    (if (i32.gt_u (i32.load (i32.const 4)) (i32.const 4096)) (then (call $proc_exit (i32.const 2))))
    (if (i32.gt_u (local.get $argc) (i32.const 64)) (then (call $proc_exit (i32.const 2))))
    (drop (call $args_get (i32.const 1024) (i32.const 2048)))
    (local.set $width (i32.const 512))
    (local.set $height (i32.const 512))
    (local.set $iterations (i32.const 200))
    (if (i32.gt_u (local.get $argc) (i32.const 1))
      (then (local.set $width (call $number (i32.load (i32.const 1028)) (i32.const 512)))))
    (if (i32.gt_u (local.get $argc) (i32.const 2))
      (then (local.set $height (call $number (i32.load (i32.const 1032)) (i32.const 512)))))
    (if (i32.gt_u (local.get $argc) (i32.const 3))
      (then (local.set $iterations (call $number (i32.load (i32.const 1036)) (i32.const 200)))))
    (if (i32.or (i32.or (i32.eqz (local.get $width)) (i32.eqz (local.get $height)))
                (i32.or (i32.gt_u (local.get $width) (i32.const 16384))
                        (i32.gt_u (local.get $height) (i32.const 16384))))
      (then (call $proc_exit (i32.const 2))))
    (if (i32.eqz (local.get $iterations)) (then (local.set $iterations (i32.const 1))))
    ;; The task's place: FOGWIRE_TASK and FOGWIRE_TASKS, the first two
    ;; variables of the environment.
    (local.set $task (i32.const 0))
    (local.set $tasks (i32.const 1))
    (drop (call $environ_sizes_get (i32.const 8) (i32.const 12)))
    (local.set $envc (i32.load (i32.const 8)))
    (if (i32.and (i32.ge_u (local.get $envc) (i32.const 2))
                 (i32.and (i32.le_u (local.get $envc) (i32.const 64))
                          (i32.le_u (i32.load (i32.const 12)) (i32.const 4096))))
      (then
        (drop (call $environ_get (i32.const 1536) (i32.const 6144)))
        (local.set $task (call $number (i32.load (i32.const 1536)) (i32.const 0)))
        (local.set $tasks (call $number (i32.load (i32.const 1540)) (i32.const 1)))))
    (if (i32.eqz (local.get $tasks)) (then (local.set $tasks (i32.const 1))))
    (local.set $y (i32.div_u (i32.mul (local.get $task) (local.get $height)) (local.get $tasks)))
    (local.set $y_end (i32.div_u (i32.mul (i32.add (local.get $task) (i32.const 1)) (local.get $height))
                                 (local.get $tasks)))
    ;; Room for the rows and a header.
    (local.set $need (i32.add (global.get $out)
      (i32.add (i32.const 64) (i32.mul (local.get $width) (i32.sub (local.get $y_end) (local.get $y))))))
    (if (i32.gt_u (local.get $need) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.sub (i32.add (i32.div_u (local.get $need) (i32.const 65536)) (i32.const 1))
                                          (memory.size)))
                    (i32.const -1))
          (then (call $proc_exit (i32.const 3))))))
    (local.set $at (global.get $out))
    (if (i32.eqz (local.get $task))
      (then
        (local.set $at (call $byte (i32.const 80) (local.get $at)))
        (local.set $at (call $byte (i32.const 53) (local.get $at)))
        (local.set $at (call $byte (i32.const 10) (local.get $at)))
        (local.set $at (call $decimal (local.get $width) (local.get $at)))
        (local.set $at (call $byte (i32.const 32) (local.get $at)))
        (local.set $at (call $decimal (local.get $height) (local.get $at)))
        (local.set $at (call $byte (i32.const 10) (local.get $at)))
        (local.set $at (call $decimal (i32.const 255) (local.get $at)))
        (local.set $at (call $byte (i32.const 10) (local.get $at)))))
    (block $rows_done
      (loop $row
        (br_if $rows_done (i32.ge_u (local.get $y) (local.get $y_end)))
        (local.set $cy (f64.sub
          (f64.mul (f64.div (f64.convert_i32_u (local.get $y)) (f64.convert_i32_u (local.get $height)))
                   (f64.const 2.4))
          (f64.const 1.2)))
        (local.set $x (i32.const 0))
        (block $cols_done
          (loop $col
            (br_if $cols_done (i32.ge_u (local.get $x) (local.get $width)))
            (local.set $cx (f64.sub
              (f64.mul (f64.div (f64.convert_i32_u (local.get $x)) (f64.convert_i32_u (local.get $width)))
                       (f64.const 3.2))
              (f64.const 2.2)))
            (local.set $zx (f64.const 0))
            (local.set $zy (f64.const 0))
            (local.set $i (i32.const 0))
            (block $escaped
              (loop $iterate
                (br_if $escaped (i32.ge_u (local.get $i) (local.get $iterations)))
                (br_if $escaped (f64.gt
                  (f64.add (f64.mul (local.get $zx) (local.get $zx)) (f64.mul (local.get $zy) (local.get $zy)))
                  (f64.const 4)))
                (local.set $t (f64.add (f64.sub (f64.mul (local.get $zx) (local.get $zx))
                                                (f64.mul (local.get $zy) (local.get $zy)))
                                       (local.get $cx)))
                (local.set $zy (f64.add (f64.mul (f64.mul (f64.const 2) (local.get $zx)) (local.get $zy))
                                        (local.get $cy)))
                (local.set $zx (local.get $t))
                (local.set $i (i32.add (local.get $i) (i32.const 1)))
                (br $iterate)))
            ;; Inside the set: black; outside: brighter the longer it took
            ;; to escape (square root, so the edge glows).
            (local.set $at (call $byte
              (if (result i32) (i32.ge_u (local.get $i) (local.get $iterations))
                (then (i32.const 0))
                (else (i32.trunc_f64_u (f64.mul (f64.const 255)
                  (f64.sqrt (f64.div (f64.convert_i32_u (local.get $i))
                                     (f64.convert_i32_u (local.get $iterations))))))))
              (local.get $at)))
            (local.set $x (i32.add (local.get $x) (i32.const 1)))
            (br $col)))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $row)))
    ;; Write it all out.
    (local.set $start (global.get $out))
    (block $written
      (loop $write
        (br_if $written (i32.ge_u (local.get $start) (local.get $at)))
        (i32.store (i32.const 16) (local.get $start))
        (i32.store (i32.const 20) (i32.sub (local.get $at) (local.get $start)))
        (if (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24))
          (then (call $proc_exit (i32.const 4))))
        (br_if $written (i32.eqz (i32.load (i32.const 24))))
        (local.set $start (i32.add (local.get $start) (i32.load (i32.const 24))))
        (br $write)))))
